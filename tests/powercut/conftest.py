"""The ``disk`` fixture: a mounted power-cut filesystem (tests/support/powercut)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.powercut.mount import PowercutDisk, fuse_available


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[PowercutDisk]:
    missing = fuse_available()
    if missing is not None:
        pytest.fail(f"power-cut tests need FUSE: {missing}")
    powercut = PowercutDisk(tmp_path / "state", tmp_path / "mnt", seed=7)
    powercut.mount()
    yield powercut
    powercut.unmount()
