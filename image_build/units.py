"""Writing a slot's systemd files under ROOT: the template unit, the boot generator and
the boot-time settle unit, ``@PREFIX@`` filled in (docs/IMAGE.md)."""

from __future__ import annotations

import os
from pathlib import Path

from image_build.layout import Layout
from sync.shared.durable_file import fsync_directory, replace_durably

__all__ = ["UNIT_PREFIX", "write_units"]

UNIT_PREFIX = "@PREFIX@"
_SETTLE_TEMPLATE = "yardlink-settle@.service"


def write_units(layout: Layout, slot: str, *, boot_from: str | None = None) -> None:
    """``slot``'s template unit; the boot generator and settle unit of ``boot_from``
    (default ``slot``): during a trial, the last confirmed slot's, so that what decides
    the next boot is code that has served here, not the release on trial.  The single
    unit of older releases is removed (it would start a second appliance at boot)."""
    boot = boot_from or slot
    for source, template, path, mode in (
        (slot, "yardlink@.service", layout.unit_file, 0o644),
        (boot, "yardlink-slot-generator", layout.generator_file, 0o755),
        (boot, _SETTLE_TEMPLATE, layout.settle_unit_file, 0o644),
    ):
        template_file = layout.slot(source) / "systemd" / template
        if template == _SETTLE_TEMPLATE and not template_file.is_file():
            _remove(path)  # a release from before the boot-time settle (its generator
            continue  # does not want the unit)
        rendered = template_file.read_text(encoding="utf-8").replace(UNIT_PREFIX, layout.prefix)
        _write(path, rendered.encode(), mode)
    _remove(layout.legacy_unit_file)


def _write(path: Path, data: bytes, mode: int) -> None:
    if not path.is_file() or path.read_bytes() != data:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_durably(path, data, mode=mode)  # never there without its mode
    elif path.stat().st_mode & 0o777 != mode:
        os.chmod(path, mode)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_directory(path.parent)
