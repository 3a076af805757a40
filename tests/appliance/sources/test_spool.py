"""Spool files are read once, moved only once durable, and never lost on restart."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from appliance.daemon import Daemon
from appliance.sources.frames import Frame
from appliance.sources.spool import SpoolWatcher
from appliance.sources.synthetic import SyntheticYardCamera
from sync.outbox import Outbox
from sync.protocol import Stream
from sync.settings import OutboxSettings
from tests.appliance.daemon_harness import read_events, site_config, wait_for
from tests.appliance.sources.memory_receipts import MemoryReceipts


def _drop(spool: Path, camera: str, start: int, count: int) -> list[str]:
    (spool / camera).mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(start, start + count):
        name = f"frame-{index:04d}.jpg"
        (spool / camera / name).write_bytes(SyntheticYardCamera(5).frame(index).encode())
        names.append(name)
    return names


async def test_files_are_read_once_moved_when_durable_and_survive_a_restart(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    config = site_config(
        tmp_path,
        sources={"cameras": [{"id": "gate-in"}], "spool_dir": str(spool), "spool_poll_s": 0.05},
        inference={"face_anonymize": {"enabled": False}},
    )
    (spool / "gate-in").mkdir(parents=True)
    (spool / "gate-in" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    first = _drop(spool, "gate-in", 0, 3)
    daemon = Daemon(config)
    await daemon.start()
    processed = spool / "processed" / "gate-in"
    try:
        await wait_for(lambda: processed.is_dir() and len(list(processed.iterdir())) == 3)
        await asyncio.sleep(0.3)  # several more scans: nothing is read again
    finally:
        await daemon.stop()
    assert sorted(p.name for p in processed.iterdir()) == first
    assert (spool / "failed" / "gate-in" / "broken.jpg").exists()
    assert "cannot be decoded" in (spool / "failed" / "gate-in" / "broken.jpg.why").read_text()
    # files arriving while the daemon is down are processed after the restart
    second = _drop(spool, "gate-in", 3, 2)
    daemon = Daemon(config)
    await daemon.start()
    try:
        await wait_for(lambda: len(list(processed.iterdir())) == 5)
        await asyncio.sleep(0.3)
    finally:
        await daemon.stop()
    assert sorted(p.name for p in processed.iterdir()) == first + second
    assert not list((spool / "gate-in").iterdir())
    events = await read_events(Path(config.outbox.path))
    assert len(events) == 5 and {e["task"] for e in events} == {"gate_ocr"}


async def test_an_odd_entry_is_refused_and_never_stalls_the_spool(tmp_path: Path) -> None:
    """A dangling symlink, a directory or a FIFO named *.jpg, or a file over the size limit,
    goes to failed/ with a reason; the good files around it are still read (no crash loop)."""
    spool = tmp_path / "spool"
    camera = spool / "gate-in"
    good = _drop(spool, "gate-in", 0, 2)
    (camera / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (camera / "folder.jpg").mkdir()
    os.mkfifo(camera / "pipe.jpg")  # reading it would block a worker thread for ever
    huge = camera / "huge.jpg"
    with open(huge, "wb") as handle:  # sparse: over the limit without using the disk
        handle.write(b"\xff\xd8\xff")
        handle.truncate(64 << 20)
    submitted: list[Frame] = []

    async def submit(frame: Frame) -> None:
        submitted.append(frame)

    watcher = SpoolWatcher(spool, {"gate-in"}, submit, receipts=MemoryReceipts(), max_bytes=4 << 20)
    assert await asyncio.wait_for(watcher.scan_once(), 10) == 2
    assert sorted(Path(f.spool_path or "").name for f in submitted) == good
    failed = spool / "failed" / "gate-in"
    reasons = {p.name: p.read_text() for p in failed.glob("*.why")}
    assert "dangling symbolic link" in reasons["dangling.jpg.why"]
    assert "not a regular file" in reasons["folder.jpg.why"]
    assert "not a regular file" in reasons["pipe.jpg.why"]
    assert "frame too large" in reasons["huge.jpg.why"]
    assert sorted(p.name for p in camera.iterdir()) == good  # only the in-flight files stay
    assert await watcher.scan_once() == 0  # nothing read twice, nothing raised
    assert watcher.status()["bad_files"] == {"gate-in": 4}  # what the technician sees


async def test_a_backlog_is_read_as_the_queue_has_room_not_dropped_and_read_again(
    tmp_path: Path,
) -> None:
    """After an outage a camera's spool holds more files than its queue: they are read
    oldest first as consumers make room, each once, and none counts as a dropped frame."""
    spool = tmp_path / "spool"
    names = _drop(spool, "gate-in", 0, 12)
    config = site_config(
        tmp_path,
        sources={
            "cameras": [{"id": "gate-in"}],
            "spool_dir": str(spool),
            "spool_poll_s": 0.05,
            "queue_bound": 2,
        },
        inference={"face_anonymize": {"enabled": False}},
    )
    daemon = Daemon(config)
    await daemon.start()
    processed = spool / "processed" / "gate-in"
    try:
        await wait_for(lambda: processed.is_dir() and len(list(processed.iterdir())) == 12)
    finally:
        await daemon.stop()
    assert daemon.queues.dropped["gate-in"] == 0
    assert daemon.queues.accepted["gate-in"] == 12  # each file read once
    assert sorted(p.name for p in processed.iterdir()) == names


async def test_a_file_overwritten_while_in_flight_is_read_again_not_moved(tmp_path: Path) -> None:
    """A camera that writes one name over and over (``snapshot.jpg``): the new frame that
    replaced the file while the old one was processed is not moved to processed/ unread."""
    spool = tmp_path / "spool"
    (spool / "gate-in").mkdir(parents=True)
    path = spool / "gate-in" / "snapshot.jpg"
    path.write_bytes(SyntheticYardCamera(5).frame(0).encode())
    submitted: list[Frame] = []

    async def submit(frame: Frame) -> None:
        submitted.append(frame)

    watcher = SpoolWatcher(spool, {"gate-in"}, submit, receipts=MemoryReceipts(), max_bytes=4 << 20)
    assert await watcher.scan_once() == 1
    newer = SyntheticYardCamera(5).frame(1).encode()
    (spool / "gate-in" / "snapshot.tmp").write_bytes(newer)
    os.replace(spool / "gate-in" / "snapshot.tmp", path)  # the camera's next frame
    await watcher.finish(submitted[0])  # the first frame's records are durable
    assert path.read_bytes() == newer  # still waiting in the spool
    assert await watcher.scan_once() == 1 and submitted[1].encoded == newer
    await watcher.finish(submitted[1])
    assert (spool / "processed" / "gate-in" / "snapshot.jpg").read_bytes() == newer
    assert not path.exists()


async def test_a_frame_not_stored_stays_and_the_spool_waits_longer_each_time(
    tmp_path: Path,
) -> None:
    """The outbox refused the frame's results: the file stays in the spool, and the spool
    reads nothing until the wait is over (1 s, 2 s, 4 s ... 60 s); a stored frame resets it."""
    spool = tmp_path / "spool"
    names = _drop(spool, "gate-in", 0, 2)
    submitted: list[Frame] = []
    now = [100.0]

    async def submit(frame: Frame) -> None:
        submitted.append(frame)

    watcher = SpoolWatcher(
        spool,
        {"gate-in"},
        submit,
        receipts=MemoryReceipts(),
        max_bytes=4 << 20,
        retry_initial_s=1.0,
        retry_max_s=60.0,
        clock=lambda: now[0],
    )
    waits = []
    for _ in range(8):
        assert await watcher.scan_once() == 2
        first, second = submitted[-2:]
        waits.append(watcher.retry_later(first, "OutboxDiskFull: disk full"))
        # the other frame, queued with it, fails during the same wait: no longer wait
        assert watcher.retry_later(second, "OutboxDiskFull: disk full") == waits[-1]
        assert await watcher.scan_once() == 0  # nothing read (no model run) while waiting
        now[0] += waits[-1] - 0.01
        assert await watcher.scan_once() == 0
        now[0] += 0.01
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert sorted(p.name for p in (spool / "gate-in").iterdir()) == names  # nothing dropped
    assert watcher.status()["failures_in_a_row"] == 8
    assert await watcher.scan_once() == 2
    await watcher.finish(submitted[-2])  # stored: the outbox takes records again
    assert watcher.status() == {
        "in_flight": 1,
        "stored_not_moved": 0,
        "bad_files": {},
        "retry_in_s": None,
        "failures_in_a_row": 0,
        "last_error": "OutboxDiskFull: disk full",
    }
    assert watcher.retry_later(submitted[-1], "OutboxFull: at its cap") == 1.0
    assert [p.name for p in (spool / "processed" / "gate-in").iterdir()] == names[:1]
    assert [p.name for p in (spool / "gate-in").iterdir()] == names[1:]


async def test_a_stored_file_processed_refuses_is_not_read_again_also_after_a_crash(
    tmp_path: Path,
) -> None:
    """The frame's records went to the outbox with its file's receipt: a watcher started
    after a kill -9 (the first one never told anything more) does not read the file again
    (the receipt says it was stored) and moves it once processed/ takes it; a new frame
    written under the same name is read, and the old receipt goes."""
    spool = tmp_path / "spool"
    (name,) = _drop(spool, "gate-in", 0, 1)
    path = spool / "gate-in" / name
    (spool / "processed").mkdir()
    (spool / "processed" / "gate-in").write_text("a file where the directory goes")
    submitted: list[Frame] = []

    async def submit(frame: Frame) -> None:
        submitted.append(frame)

    outbox = Outbox.open(tmp_path / "outbox", OutboxSettings(min_free_disk_bytes=0))
    try:
        crashed = SpoolWatcher(spool, {"gate-in"}, submit, receipts=outbox, max_bytes=4 << 20)
        assert await crashed.scan_once() == 1
        receipt = crashed.receipt_of(submitted[0])
        (seq,) = await outbox.append_many(Stream.EVENTS, [b"{}"], receipt=receipt)
        await crashed.finish(submitted[0])  # stored; the move fails, and is not raised
        assert await crashed.scan_once() == 0
        assert crashed.status()["stored_not_moved"] == 1
        assert receipt is not None and outbox.receipt(receipt) == seq  # kept: not moved
        restarted = SpoolWatcher(spool, {"gate-in"}, submit, receipts=outbox, max_bytes=4 << 20)
        assert await restarted.scan_once() == 0 and path.exists()
        assert restarted.status()["stored_not_moved"] == 1 and outbox.receipts() != {}
        newer = SyntheticYardCamera(6).frame(1).encode()
        path.write_bytes(newer)  # the camera writes a new frame under the same name
        os.utime(path, ns=(1, 1))
        assert await restarted.scan_once() == 1 and submitted[-1].encoded == newer
        assert outbox.receipts() == {}  # the old file's receipt went with it
        (spool / "processed" / "gate-in").unlink()
        await restarted.finish(submitted[-1])
        assert (spool / "processed" / "gate-in" / name).read_bytes() == newer
        assert len(submitted) == 2 and not list((spool / "gate-in").iterdir())
    finally:
        await outbox.close()


async def test_a_stored_file_is_moved_at_the_next_scan_once_processed_takes_it(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    (name,) = _drop(spool, "gate-in", 0, 1)
    (spool / "processed").mkdir()
    (spool / "processed" / "gate-in").write_text("a file where the directory goes")
    submitted: list[Frame] = []

    async def submit(frame: Frame) -> None:
        submitted.append(frame)

    receipts = MemoryReceipts()
    watcher = SpoolWatcher(spool, {"gate-in"}, submit, receipts=receipts, max_bytes=4 << 20)
    assert await watcher.scan_once() == 1
    receipts.store(watcher.receipt_of(submitted[0]))
    await watcher.finish(submitted[0])
    assert await watcher.scan_once() == 0 and receipts.held
    (spool / "processed" / "gate-in").unlink()
    assert await watcher.scan_once() == 0
    assert (spool / "processed" / "gate-in" / name).exists()
    assert receipts.held == {} and watcher.status()["stored_not_moved"] == 0
