"""replace_durably: the new file replaces the old whole, with the mode asked for."""

from __future__ import annotations

import stat
from pathlib import Path

from sync.shared.durable_file import TEMP_SUFFIX, replace_durably


def test_replaces_the_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "unit.service"
    target.write_bytes(b"old")
    replace_durably(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # mkstemp's default
    assert not list(tmp_path.glob(f"*{TEMP_SUFFIX}"))


def test_mode_is_set_before_the_file_appears(tmp_path: Path) -> None:
    target = tmp_path / "generator"
    replace_durably(target, b"#!/bin/sh\n", mode=0o755)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert target.read_bytes() == b"#!/bin/sh\n"
