"""Seqs never name two records: the floor file outlives the database, and a new outbox
confirms (or renumbers) its seqs against what the cloud holds before anything is sent."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

import sync.outbox.history as history
from sync.errors import OutboxStorageError, RecordRejected
from sync.outbox import Outbox
from sync.outbox.recovery import mark_corrupt
from sync.outbox.seq_floor import floor_path
from sync.protocol import Stream
from sync.settings import OutboxSettings

SMALL = OutboxSettings(min_free_disk_bytes=0, memory_budget_bytes=8 << 20)


@asynccontextmanager
async def _opened(path: Path) -> AsyncIterator[Outbox]:
    outbox = Outbox.open(path, SMALL)
    try:
        yield outbox
    finally:
        await outbox.close()


def _contents(outbox: Outbox) -> dict[Stream, list[tuple[int, bytes]]]:
    return {
        stream: [(r.seq, r.payload) for r in outbox.read(stream, max_records=100_000)]
        for stream in (Stream.CRITICAL, Stream.EVENTS, Stream.TELEMETRY)
    }


async def _fill(outbox: Outbox, rounds: int = 5) -> None:
    for i in range(rounds):  # classes interleaved: seqs of one class have gaps
        await outbox.append_many(Stream.EVENTS, [b"e%d-%d" % (i, j) for j in range(9)])
        await outbox.append(Stream.CRITICAL, b"c%d" % i)
        await outbox.append_many(Stream.TELEMETRY, [b"t%d-%d" % (i, j) for j in range(3)])


async def _synced_and_closed(path: Path) -> int:
    """An outbox that has synced before, with records; closed; its last seq."""
    outbox = Outbox.open(path, SMALL)
    await outbox.confirm_history(0)
    await _fill(outbox)
    last = outbox.stats().next_seq - 1
    await outbox.close()
    return last


async def test_every_start_is_unconfirmed_until_a_handshake(tmp_path: Path) -> None:
    path = tmp_path / "outbox"
    outbox = Outbox.open(path, SMALL)
    assert outbox.history_unconfirmed
    await _fill(outbox)
    assert await outbox.confirm_history(0) == 0  # the cloud holds nothing of this device
    assert not outbox.history_unconfirmed
    held = _contents(outbox)
    sent = outbox.stats().next_seq - 1
    await outbox.close()
    reopened = Outbox.open(path, SMALL)  # another run: the database may be a restored copy
    try:
        assert reopened.history_unconfirmed
        assert await reopened.confirm_history(sent) == 0  # the cloud holds what it sent
        assert not reopened.history_unconfirmed
        assert _contents(reopened) == held
    finally:
        await reopened.close()


async def test_an_existing_database_without_a_floor_file_gets_one(tmp_path: Path) -> None:
    """A device upgraded from a version without the floor file keeps its seqs."""
    path = tmp_path / "outbox"
    outbox = Outbox.open(path, SMALL)
    await _fill(outbox)
    last = outbox.stats().next_seq - 1
    await outbox.close()
    floor_path(path).unlink()
    async with _opened(path) as reopened:
        assert json.loads(floor_path(path).read_text())["seq_floor"] > last
        assert await reopened.confirm_history(last) == 0


def _quarantine(path: Path) -> None:
    mark_corrupt(path, "test: damaged at run time")


@pytest.mark.parametrize("lose", [_quarantine, shutil.rmtree], ids=["quarantined", "removed"])
async def test_a_lost_database_does_not_reset_the_seqs(
    tmp_path: Path, lose: Callable[[Path], None]
) -> None:
    path = tmp_path / "outbox"
    last = await _synced_and_closed(path)
    lose(path)
    async with _opened(path) as fresh:
        assert fresh.read(Stream.EVENTS) == []
        assert await fresh.append(Stream.EVENTS, b"after") > last
        assert await fresh.confirm_history(last) == 0  # the floor file kept the history


async def test_a_lost_disk_with_no_records_yet_continues_above_the_cloud(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox"
    async with _opened(path) as outbox:
        assert outbox.history_unconfirmed
        assert await outbox.confirm_history(250_000) == 0  # nothing to renumber
        assert not outbox.history_unconfirmed
        assert await outbox.append(Stream.EVENTS, b"first") > 250_000


async def test_records_of_a_new_outbox_the_cloud_holds_seqs_of_are_renumbered_in_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox"
    async with _opened(path) as outbox:
        await _fill(outbox)
        before = _contents(outbox)
        usage = {s: (c.records, c.bytes) for s, c in outbox.stats().per_class.items()}
        cloud_max = 30  # inside this outbox's seqs: the old device sent 30 seqs
        moved = await outbox.confirm_history(cloud_max)
        assert moved == sum(len(v) for v in before.values())
        assert not outbox.history_unconfirmed
        after = _contents(outbox)
        for stream, records in before.items():
            assert [p for _, p in after[stream]] == [p for _, p in records]  # order kept
            assert all(seq > cloud_max for seq, _ in after[stream])
            shifts = {new - old for (new, _), (old, _) in zip(after[stream], records, strict=True)}
            assert len(shifts) == 1  # one shift for every record: gaps and order kept
        assert {s: (c.records, c.bytes) for s, c in outbox.stats().per_class.items()} == usage
        newest = max(seq for records in after.values() for seq, _ in records)
        later = await outbox.append(Stream.EVENTS, b"later")
        assert later > newest
        final = _contents(outbox)
        for stream, records in before.items():  # seqs kept elsewhere can be translated
            for (new, _), (old, _) in zip(after[stream], records, strict=True):
                assert outbox.seq_now(old) == new and outbox.seq_then(new) == old
        assert outbox.seq_now(later) == later == outbox.seq_then(later)
    async with _opened(path) as reopened:
        assert _contents(reopened) == final
        old, new = before[Stream.CRITICAL][0][0], after[Stream.CRITICAL][0][0]
        assert reopened.seq_now(old) == new and reopened.seq_then(new) == old  # kept on disk


async def test_a_renumbering_cut_short_resumes_with_the_same_shift(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chunk is one synced WriteBatch: a failure (or a kill) between chunks leaves
    every record under its old seq or its new one; the next handshake finishes it."""
    path = tmp_path / "outbox"
    outbox = Outbox.open(path, SMALL)
    await _fill(outbox, rounds=8)
    before = _contents(outbox)
    monkeypatch.setattr(history, "_MOVE_CHUNK", 4)
    store = outbox._store
    real_move, calls = store.move_records, [0]

    def move_then_fail(*args: object) -> None:
        calls[0] += 1
        if calls[0] == 5:  # injected fault: the disk goes away after four chunks
            raise OutboxStorageError("injected: I/O error")
        real_move(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "move_records", move_then_fail)
    with pytest.raises(OutboxStorageError):
        await outbox.confirm_history(40)
    await outbox.close()

    async with _opened(path) as reopened:
        half = _contents(reopened)
        assert sum(map(len, half.values())) == sum(map(len, before.values()))  # none lost
        early = await reopened.append(Stream.EVENTS, b"appended before the handshake")
        await reopened.confirm_history(40)
        after = _contents(reopened)
        for stream, records in before.items():
            payloads = [p for _, p in after[stream]]
            expected = [p for _, p in records]
            if stream is Stream.EVENTS:
                expected.append(b"appended before the handshake")
            assert payloads == expected  # order kept across the interruption
            assert all(seq > 40 for seq, _ in after[stream])
        assert after[Stream.EVENTS][-1][0] == early  # above the renumbered ones


async def test_a_restored_database_continues_above_what_the_cloud_holds(
    tmp_path: Path,
) -> None:
    """The database (and its floor file) restored from an older copy: new seqs go above
    the cloud's, the records it still holds keep theirs (the cloud got those)."""
    path = tmp_path / "outbox"
    outbox = Outbox.open(path, SMALL)
    await outbox.confirm_history(0)
    await _fill(outbox)
    held = _contents(outbox)
    await outbox.close()
    async with _opened(path) as restored:
        assert await restored.confirm_history(900_000) == 0
        assert _contents(restored) == held
        assert await restored.append(Stream.EVENTS, b"new") > 900_000


async def test_a_restored_data_dir_renumbers_what_it_recorded_since(tmp_path: Path) -> None:
    """Database and floor file restored from a backup: the cloud holds seqs the lost
    timeline used after the backup, and this run reused them. Those records move above
    the cloud's; the records of the backup keep theirs (the cloud's copies are them)."""
    path, backup = tmp_path / "outbox", tmp_path / "backup" / "outbox"
    outbox = Outbox.open(path, SMALL)
    await outbox.confirm_history(0)
    await _fill(outbox, rounds=2)
    backed_up = _contents(outbox)
    await outbox.close()
    backup.parent.mkdir()
    shutil.copytree(path, backup)
    shutil.copy2(floor_path(path), floor_path(backup))
    lost = Outbox.open(path, SMALL)  # the timeline the restore throws away
    await lost.confirm_history(0)
    await lost.append_many(Stream.EVENTS, [b"lost-%d" % i for i in range(20)])
    sent = lost.stats().next_seq - 1  # ... and the cloud got all of it
    await lost.close()
    shutil.rmtree(path)
    shutil.copytree(backup, path)
    shutil.copy2(floor_path(backup), floor_path(path))
    async with _opened(path) as restored:
        reused = await restored.append_many(Stream.EVENTS, [b"new-0", b"new-1"])
        assert min(reused) <= sent  # the restored counter hands out seqs the cloud holds
        assert await restored.confirm_history(sent) == 2
        held = _contents(restored)
        assert held[Stream.CRITICAL] == backed_up[Stream.CRITICAL]
        assert held[Stream.EVENTS][:-2] == backed_up[Stream.EVENTS]
        assert [p for _, p in held[Stream.EVENTS][-2:]] == [b"new-0", b"new-1"]
        assert all(seq > sent for seq, _ in held[Stream.EVENTS][-2:])


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[]",
        b'{"seq_floor": -4, "unconfirmed_from": null}',
        b'{"seq_floor": 10, "unconfirmed_from": null, "shift": 5}',
        b"\xff\xfe",
    ],
)
async def test_a_damaged_floor_file_is_logged_not_a_crash(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox"
    outbox = Outbox.open(path, SMALL)
    await outbox.confirm_history(0)
    seq = await outbox.append(Stream.EVENTS, b"kept")
    await outbox.close()
    floor_path(path).write_bytes(content)
    with caplog.at_level(logging.ERROR):
        reopened = Outbox.open(path, SMALL)
    try:
        assert "seq floor" in caplog.text
        assert [r.seq for r in reopened.read(Stream.EVENTS)] == [seq]
        assert await reopened.append(Stream.EVENTS, b"next") > seq
        json.loads(floor_path(path).read_text())  # rewritten whole
    finally:
        await reopened.close()


@pytest.mark.parametrize("bad", [-1, 1.5, "7", None, True])
async def test_confirm_history_refuses_a_bad_cloud_seq(tmp_path: Path, bad: object) -> None:
    async with _opened(tmp_path / "outbox") as outbox:
        with pytest.raises(RecordRejected):
            await outbox.confirm_history(bad)  # type: ignore[arg-type]
        assert outbox.history_unconfirmed
