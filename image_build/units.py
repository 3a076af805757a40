"""Writing a slot's systemd files under ROOT: the template unit and the boot generator,
``@PREFIX@`` filled in (docs/IMAGE.md)."""

from __future__ import annotations

import os
from pathlib import Path

from image_build.layout import Layout
from sync.shared.durable_file import fsync_directory, replace_durably

__all__ = ["UNIT_PREFIX", "write_units"]

UNIT_PREFIX = "@PREFIX@"


def write_units(layout: Layout, slot: str, *, boot_from: str | None = None) -> None:
    """``slot``'s template unit, and the boot generator of ``boot_from`` (default
    ``slot``): during a trial the last confirmed slot's, so that what decides the next
    boot is code that has served here, not the release on trial.  The single unit of
    older releases is removed (it would start a second appliance at boot)."""
    for source, template, path, mode in (
        (slot, "yardlink@.service", layout.unit_file, 0o644),
        (boot_from or slot, "yardlink-slot-generator", layout.generator_file, 0o755),
    ):
        text = (layout.slot(source) / "systemd" / template).read_text(encoding="utf-8")
        _write(path, text.replace(UNIT_PREFIX, layout.prefix).encode(), mode)
    if layout.legacy_unit_file.is_file():
        layout.legacy_unit_file.unlink()
        fsync_directory(layout.legacy_unit_file.parent)


def _write(path: Path, data: bytes, mode: int) -> None:
    if not path.is_file() or path.read_bytes() != data:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_durably(path, data, mode=mode)  # never there without its mode
    elif path.stat().st_mode & 0o777 != mode:
        os.chmod(path, mode)
