"""A spool file moved to processed/ or failed/ stays moved after a power cut: both
directories are fsync'd after the rename (the destination first, then the source).

What these tests prove: through the real ``SpoolWatcher`` on real files, ``os.fsync`` is
called on a descriptor of the destination directory once the file is in it, and on one
of the source directory once it is gone from it.  What they cannot prove: that the
filesystem (or the disk's cache) honours a directory fsync, nor anything a real power cut
would show; that needs a fault-injecting block device (dm-flakey, dm-log-writes).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.sources.frames import Frame
from appliance.sources.spool import SpoolWatcher
from tests.appliance.sources.memory_receipts import MemoryReceipts
from tests.appliance.spool_harness import drop_frame


class FsyncRecorder:
    """Wraps ``os.fsync``: for each directory fsync'd, its path and its entries then."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.directories: list[tuple[Path, set[str]]] = []
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            path = Path(os.readlink(f"/proc/self/fd/{fd}"))
            if path.is_dir():
                self.directories.append((path, set(os.listdir(path))))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    def entries_when_synced(self, directory: Path) -> list[set[str]]:
        return [entries for path, entries in self.directories if path == directory]

    def entries_when_last_synced(self, directory: Path) -> set[str]:
        """The directory's entries at its last fsync (it must have been fsync'd)."""
        synced = self.entries_when_synced(directory)
        assert synced, f"{directory} never fsync'd"
        return synced[-1]


async def _read_all(spool: Path) -> tuple[SpoolWatcher, list[Frame]]:
    submitted: list[Frame] = []

    async def submit(frame: Frame) -> None:
        submitted.append(frame)

    watcher = SpoolWatcher(spool, {"gate-in"}, submit, receipts=MemoryReceipts(), max_bytes=4 << 20)
    await watcher.scan_once()
    return watcher, submitted


async def test_a_stored_frame_moved_to_processed_is_fsynced_in_both_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "spool"
    camera = drop_frame(spool, "frame-0001.jpg").parent
    watcher, submitted = await _read_all(spool)
    recorder = FsyncRecorder(monkeypatch)
    await watcher.finish(submitted[0])
    processed = spool / "processed" / "gate-in"
    assert (processed / "frame-0001.jpg").exists()
    assert "frame-0001.jpg" in recorder.entries_when_last_synced(processed)
    assert "frame-0001.jpg" not in recorder.entries_when_last_synced(camera)
    # processed/gate-in was created by the move: its own entry in processed/ is synced too
    assert recorder.entries_when_synced(spool / "processed")
    order = [path for path, _ in recorder.directories]
    assert order.index(processed) < order.index(camera)  # destination first


async def test_a_file_moved_to_failed_is_fsynced_with_its_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "spool"
    camera = drop_frame(spool, "broken.jpg", b"\xff\xd8\xff not really").parent
    recorder = FsyncRecorder(monkeypatch)
    watcher, submitted = await _read_all(spool)
    assert not submitted
    failed = spool / "failed" / "gate-in"
    assert (failed / "broken.jpg").exists()
    assert {"broken.jpg", "broken.jpg.why"} <= recorder.entries_when_last_synced(failed)
    assert "broken.jpg" not in recorder.entries_when_last_synced(camera)
