"""The spool's receipts: a key per file as read, any file name, and the receipts a crash
left behind dropped at the first scan.  The crash itself: tests/appliance/
test_daemon_spool_crash.py (a real daemon killed with SIGKILL)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.sources.frames import Frame
from appliance.sources.spool import SpoolWatcher
from appliance.sources.spool_stored import (
    file_identity,
    parse_spool_receipt,
    spool_receipt,
)
from appliance.sources.synthetic import SyntheticYardCamera
from sync.outbox import MAX_RECEIPT_BYTES, check_receipt
from tests.appliance.sources.memory_receipts import MemoryReceipts


@pytest.mark.parametrize(
    "name",
    ["frame-0001.jpg", "a:b:1:2.jpg", os.fsdecode(b"\xff\xfe.jpg"), "é" * 123 + ".jpg"],
)
def test_a_receipt_key_names_its_file_whatever_the_name(name: str) -> None:
    identity = (2**40 + 3, 4 << 20, 1_764_400_000_123_456_789)
    key = spool_receipt("gate-in-" + "x" * 56, name, identity)
    assert parse_spool_receipt(key) == ("gate-in-" + "x" * 56, name, identity)
    assert check_receipt(key) == key and len(key) <= MAX_RECEIPT_BYTES
    assert spool_receipt("gate-in", name, (1, 2, 3)) != spool_receipt("gate-in", name, (1, 2, 4))


def test_a_key_of_someone_else_is_not_parsed() -> None:
    assert parse_spool_receipt(b"other/gate-in/x.jpg\x001:2:3") is None
    assert parse_spool_receipt(b"spool/gate-in/x.jpg\x00not:an:identity") is None


async def test_receipts_a_crash_left_behind_are_dropped_at_the_first_scan(tmp_path: Path) -> None:
    """Moved before the crash (gone): dropped.  Still there as read (a crash before the
    move): kept, so the scan moves the file without submitting it, then dropped.  The
    camera wrote a new frame under the name: dropped, the new frame read."""
    spool = tmp_path / "spool"
    camera = spool / "gate-in"
    camera.mkdir(parents=True)
    for name in ("stored.jpg", "rewritten.jpg"):
        (camera / name).write_bytes(SyntheticYardCamera(5).frame(0).encode())
    receipts = MemoryReceipts()
    stored = file_identity((camera / "stored.jpg").stat())
    receipts.store(spool_receipt("gate-in", "stored.jpg", stored))
    receipts.store(spool_receipt("gate-in", "moved.jpg", (1, 2, 3)))
    old = file_identity((camera / "rewritten.jpg").stat())
    receipts.store(spool_receipt("gate-in", "rewritten.jpg", (old[0], old[1], old[2] - 1)))
    receipts.store(b"spool/garbage")
    receipts.store(b"other/not-the-spools")
    submitted: list[Frame] = []

    async def submit(frame: Frame) -> None:
        submitted.append(frame)

    watcher = SpoolWatcher(spool, {"gate-in"}, submit, receipts=receipts, max_bytes=4 << 20)
    assert await watcher.scan_once() == 1
    assert [Path(f.spool_path or "").name for f in submitted] == ["rewritten.jpg"]
    assert (spool / "processed" / "gate-in" / "stored.jpg").exists()
    assert list(receipts.held) == [b"other/not-the-spools"]
    assert await watcher.scan_once() == 0
