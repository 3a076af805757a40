"""A class count that no longer matches the records is counted again, never waited on.

A count of records over an empty class made the sync engine wait for records that
were not there (it flushed a "partial batch" of nothing ahead of raw, for ever); the
count is checked with one seek at open and set right by a read that walks the whole
class.  The drift is made here by writing a wrong count into the closed database (its
origin, a write whose caller was cancelled, is pinned in
``test_outbox_cancelled_writes.py``); these tests keep the safety net.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from sync.errors import OutboxStorageError
from sync.outbox import Outbox
from sync.outbox.eviction import ClassUsage
from sync.protocol import Stream
from sync.settings import OutboxSettings
from tests.support.outbox import assert_counts_true, write_persisted_count

SMALL = OutboxSettings(min_free_disk_bytes=0, memory_budget_bytes=8 << 20)


async def test_a_count_over_an_empty_class_is_zero_after_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox"
    outbox = Outbox.open(path, SMALL)
    seqs = await outbox.append_many(Stream.EVENTS, [b"a", b"b", b"c"])
    await outbox.ack(Stream.EVENTS, seqs[-1])
    await outbox.close()
    write_persisted_count(path, Stream.EVENTS, 2, 1160)  # what a stalled soak run's outbox held

    with caplog.at_level(logging.ERROR):
        reopened = Outbox.open(path, SMALL)
    try:
        assert reopened.stats().per_class[Stream.EVENTS].records == 0
        assert "outbox count of events was 2 records" in caplog.text
        seq = await reopened.append(Stream.EVENTS, b"after")  # counts go on from zero
        assert [r.seq for r in reopened.read(Stream.EVENTS)] == [seq]
        assert reopened.stats().per_class[Stream.EVENTS].records == 1
    finally:
        await reopened.close()


async def test_a_zero_count_over_records_is_counted_again_at_open(tmp_path: Path) -> None:
    path = tmp_path / "outbox"
    outbox = Outbox.open(path, SMALL)
    await outbox.append_many(Stream.TELEMETRY, [b"x" * 100, b"y" * 50])
    held = outbox.stats().per_class[Stream.TELEMETRY]
    await outbox.close()
    write_persisted_count(path, Stream.TELEMETRY, 0, 0)

    reopened = Outbox.open(path, SMALL)
    try:
        again = reopened.stats().per_class[Stream.TELEMETRY]
        assert (again.records, again.bytes) == (held.records, held.bytes) == (2, held.bytes)
    finally:
        await reopened.close()


async def test_a_read_that_walks_an_empty_class_sets_its_count_to_zero(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = Outbox.open(tmp_path / "outbox", SMALL)
    try:
        seqs = await outbox.append_many(Stream.EVENTS, [b"a", b"b"])
        await outbox.ack(Stream.EVENTS, seqs[-1])
        # the drift made by hand on the live ledger (the safety net behind the fix)
        outbox._ledger.usage[Stream.EVENTS] = ClassUsage(2, 9)
        assert outbox.stats().per_class[Stream.EVENTS].records == 2
        with caplog.at_level(logging.ERROR):
            assert outbox.read(Stream.EVENTS) == []
        assert outbox.stats().per_class[Stream.EVENTS].records == 0
        assert "holds none: set to zero" in caplog.text
    finally:
        await outbox.close()


async def test_a_read_past_records_left_unsent_keeps_the_count(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path / "outbox", SMALL)
    try:
        seqs = await outbox.append_many(Stream.EVENTS, [b"a", b"b"])
        assert outbox.read(Stream.EVENTS, after_seq=seqs[-1]) == []  # not from the watermark
        assert outbox.stats().per_class[Stream.EVENTS].records == 2
    finally:
        await outbox.close()


# ---------------------------------------------------------------------- paths that change a count
# Each writes the way the engine does and checks the counts against the records
# (``assert_counts_true``); the cancelled caller, the origin of the soak run's drift,
# is in test_outbox_cancelled_writes.py.

TTL = OutboxSettings(
    min_free_disk_bytes=0,
    memory_budget_bytes=8 << 20,
    ttl_s={Stream.TELEMETRY: 10.0, Stream.RAW_REQUESTED: None, Stream.RAW_SAMPLED: None},
)


def _fail_next_fsync(outbox: Outbox) -> None:
    """The next fsync fails after its write was applied (as an I/O error would)."""
    store = outbox._store
    real = store.sync_wal

    def failing() -> None:
        store.sync_wal = real  # type: ignore[method-assign]
        raise OutboxStorageError("injected: fsync failed")

    store.sync_wal = failing  # type: ignore[method-assign]


async def test_an_expiry_after_a_failed_ack_counts_from_the_database(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    outbox = Outbox.open(tmp_path / "outbox", TTL, clock=lambda: now[0])
    try:
        seqs = await outbox.append_many(Stream.TELEMETRY, [b"a", b"b", b"c"])
        _fail_next_fsync(outbox)
        with pytest.raises(OutboxStorageError):
            await outbox.ack(Stream.TELEMETRY, seqs[0])  # applied, its fsync failed
        now[0] += 60
        # expiry reopens first (the ledger may be behind); before, it persisted 1 over none
        assert await outbox.run_maintenance() == {"telemetry_expired": 2}
        assert_counts_true(outbox)
    finally:
        await outbox.close()


async def test_an_eviction_after_a_failed_ack_counts_from_the_database(tmp_path: Path) -> None:
    settings = OutboxSettings(
        max_bytes=1 << 20, backpressure_wait_s=0, min_free_disk_bytes=0, memory_budget_bytes=8 << 20
    )
    outbox = Outbox.open(tmp_path / "outbox", settings)
    try:
        seqs = [await outbox.append(Stream.TELEMETRY, b"t" * 64_000) for _ in range(16)]
        _fail_next_fsync(outbox)
        with pytest.raises(OutboxStorageError):
            await outbox.ack(Stream.TELEMETRY, seqs[1])
        await outbox.append(Stream.TELEMETRY, b"u" * 64_000)  # needs room: evicts
        assert_counts_true(outbox)
    finally:
        await outbox.close()


async def test_one_range_acked_by_two_paths_at_once_is_counted_once(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path / "outbox", SMALL)
    try:
        seqs = await outbox.append_many(Stream.EVENTS, [b"a", b"b", b"c"])
        assert outbox.read(Stream.EVENTS)  # a walk the ack may count from
        # e.g. a metadata send's ack and a handshake's delta ack of the same range
        removed = await asyncio.gather(
            outbox.ack(Stream.EVENTS, seqs[-1]), outbox.ack(Stream.EVENTS, seqs[-1])
        )
        assert sorted(removed) == [0, 3]
        assert await outbox.ack(Stream.EVENTS, seqs[-1]) == 0  # a retry of a landed ack
        assert_counts_true(outbox)
    finally:
        await outbox.close()


async def test_acks_of_seqs_never_written_count_only_records(tmp_path: Path) -> None:
    path = tmp_path / "outbox"
    outbox = Outbox.open(path, SMALL)
    first = await outbox.append_many(Stream.EVENTS, [b"a", b"b"])
    await outbox.append(Stream.CRITICAL, b"other class: a hole in the events' seqs")
    await outbox.close()
    outbox = Outbox.open(path, SMALL)  # a new seq block: a gap of unused seqs
    try:
        later = await outbox.append_many(Stream.EVENTS, [b"c", b"d"])
        assert await outbox.ack(Stream.EVENTS, first[-1] + 1) == 2  # the critical seq
        assert_counts_true(outbox)
        assert await outbox.ack(Stream.EVENTS, later[0] - 1) == 0  # the unused block
        assert await outbox.ack(Stream.EVENTS, later[-1] + 10**6) == 2  # above committed
        assert outbox.acked_watermark(Stream.EVENTS) == later[-1]
        assert_counts_true(outbox)
    finally:
        await outbox.close()


async def test_an_append_under_a_held_receipt_is_stored_and_counted_again(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path / "outbox", SMALL)
    try:
        await outbox.append_many(Stream.EVENTS, [b"a", b"b"], receipt=b"spool/1")
        again = await outbox.append_many(Stream.EVENTS, [b"a", b"b"], receipt=b"spool/1")
        assert outbox.receipt(b"spool/1") == again[0]  # no dedupe: the later append
        assert outbox.stats().per_class[Stream.EVENTS].records == 4
        assert_counts_true(outbox)
    finally:
        await outbox.close()
