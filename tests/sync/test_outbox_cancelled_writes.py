"""A write whose caller is cancelled is booked all the same: counts never drift.

The origin of the stalled soak run's drift (an ``events`` count of 2 records, 1,160 B,
over an empty class; docs/OUTBOX.md, "Counts that drifted"): the sync engine cancels
a metadata send beside raw uploads when they fail, and the send may be awaiting
``Outbox.ack``.  The ack's delete runs on the writer thread to its end whatever
happens to the caller, but the ledger was only told after the await: it kept the
records and the old watermark, and the class's next write persisted the count made
from it.  Each test here holds a write on the writer thread (``WriterGate``), cancels
its caller meanwhile, and checks that the outbox's counts (in memory, then on disk)
are what the classes really hold.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.outbox import BatchBoundary, Outbox, OutboxRecord
from sync.outbox.eviction import ClassUsage
from sync.protocol import Stream
from sync.settings import OutboxSettings
from tests.support.outbox import (
    OUTBOX,
    WriterGate,
    assert_counts_true,
    held_usage,
    persisted_usage,
)

SOAK_PAYLOAD = b"e" * 555  # 580 B a record with key and header: the soak run's 2 x 580


def _open(
    path: Path, settings: OutboxSettings = OUTBOX, **kwargs: Any
) -> tuple[Outbox, WriterGate]:
    """An outbox whose store writes on the writer thread can be held (``WriterGate``)."""
    outbox = Outbox.open(path, settings, **kwargs)
    gate = WriterGate()
    store = outbox._store
    store.commit = gate.wrap(store.commit)  # type: ignore[method-assign]
    store.sync_wal = gate.wrap(store.sync_wal)  # type: ignore[method-assign]
    return outbox, gate


async def _cancel_while_written(gate: WriterGate, work: Coroutine[Any, Any, object]) -> bool:
    """Run ``work``, cancel it while its write is held on the writer thread, let the
    write land, and wait until it has.  False (not cancelled) when ``work`` ended
    without a write on the writer thread (e.g. an expiry that found nothing)."""
    gate.arm()
    task = asyncio.create_task(work)
    entered = asyncio.create_task(gate.entered())
    await asyncio.wait((task, entered), return_when=asyncio.FIRST_COMPLETED)
    if not entered.done():
        entered.cancel()
        gate.disarm()
        await task
        return False
    task.cancel()
    await asyncio.sleep(0)  # the cancel reaches the caller while its write is held
    gate.release()
    with pytest.raises(asyncio.CancelledError):
        await task
    await gate.left()
    return True


async def test_a_cancelled_ack_is_booked_and_no_count_drifts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox"
    outbox, gate = _open(path)
    seqs = await outbox.append_many(Stream.EVENTS, [SOAK_PAYLOAD, SOAK_PAYLOAD])
    assert outbox.stats().per_class[Stream.EVENTS].bytes == 1160

    assert await _cancel_while_written(gate, outbox.ack(Stream.EVENTS, seqs[-1]))
    assert held_usage(outbox, Stream.EVENTS).records == 0  # the ack did land
    assert_counts_true(outbox)  # before the fix: 2 records, 1,160 B over none
    assert outbox.acked_watermark(Stream.EVENTS) == seqs[-1]

    # the soak run's sequence: the class's next append and ack persisted the drift
    seq = await outbox.append(Stream.EVENTS, b"next")
    assert await outbox.ack(Stream.EVENTS, seq) == 1
    assert_counts_true(outbox)
    await outbox.close()
    assert persisted_usage(path, Stream.EVENTS) == ClassUsage(0, 0)

    with caplog.at_level(logging.ERROR):
        reopened = Outbox.open(path, OUTBOX)
    try:
        assert "outbox count of" not in caplog.text  # the guard of 1011051 had nothing to do
        assert_counts_true(reopened)
    finally:
        await reopened.close()


async def _held_on_disk(path: Path) -> dict[Stream, ClassUsage]:
    """What every class of the closed outbox at ``path`` holds (opened to walk it)."""
    outbox = Outbox.open(path, OUTBOX)
    try:
        return {stream: held_usage(outbox, stream) for stream in Stream}
    finally:
        await outbox.close()


async def test_a_cancelled_pin_is_booked(tmp_path: Path) -> None:
    outbox, gate = _open(tmp_path / "outbox")
    try:
        seqs = await outbox.append_many(Stream.EVENTS, [b"a", b"b"])
        pin = BatchBoundary(Stream.EVENTS, seqs[0], seqs[-1], "batch-1")
        assert await _cancel_while_written(gate, outbox.pin_batch(pin))
        assert outbox.pinned_batches(Stream.EVENTS) == [pin]  # what the database holds
        assert await outbox.ack(Stream.EVENTS, seqs[-1]) == 2
        assert outbox.pinned_batches(Stream.EVENTS) == []
    finally:
        await outbox.close()


async def test_an_eviction_for_a_cancelled_append_is_booked(tmp_path: Path) -> None:
    evicted: list[OutboxRecord] = []

    def listener(stream: Stream, records: Sequence[OutboxRecord]) -> None:
        evicted.extend(records)

    settings = OutboxSettings(
        max_bytes=1 << 20, backpressure_wait_s=0, min_free_disk_bytes=0, memory_budget_bytes=8 << 20
    )
    outbox, gate = _open(tmp_path / "outbox", settings, on_evicted=listener)
    try:
        for _ in range(16):
            await outbox.append(Stream.TELEMETRY, b"t" * 64_000)
        # this append needs room: the oldest telemetry is dropped, then it is cancelled
        assert await _cancel_while_written(gate, outbox.append(Stream.TELEMETRY, b"u" * 64_000))
        assert evicted, "the listener hears of what eviction removed (blobs are freed)"
        assert outbox.stats().evictions.get("telemetry_dropped") == len(evicted)
        assert_counts_true(outbox)
    finally:
        await outbox.close()


async def test_a_cancelled_expiry_is_booked(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    evicted: list[OutboxRecord] = []

    def listener(stream: Stream, records: Sequence[OutboxRecord]) -> None:
        evicted.extend(records)

    settings = OutboxSettings(
        min_free_disk_bytes=0,
        memory_budget_bytes=8 << 20,
        ttl_s={Stream.TELEMETRY: 10.0, Stream.RAW_REQUESTED: None, Stream.RAW_SAMPLED: None},
    )
    outbox, gate = _open(tmp_path / "outbox", settings, clock=lambda: now[0], on_evicted=listener)
    try:
        await outbox.append_many(Stream.TELEMETRY, [b"a", b"b", b"c"])
        now[0] += 60
        assert await _cancel_while_written(gate, outbox.run_maintenance())
        assert len(evicted) == 3
        assert_counts_true(outbox)
    finally:
        await outbox.close()


async def test_a_group_whose_flusher_is_cancelled_during_its_fsync_is_counted(
    tmp_path: Path,
) -> None:
    settings = OutboxSettings(
        min_free_disk_bytes=0, memory_budget_bytes=8 << 20, fsync_in_place_below_ms=0
    )
    outbox, gate = _open(tmp_path / "outbox", settings)
    try:
        gate.arm()
        append = asyncio.create_task(outbox.append_many(Stream.EVENTS, [b"a", b"b"]))
        await gate.entered()  # the group is written, its fsync held on the writer thread
        flusher = outbox._queue._flusher
        assert flusher is not None
        flusher.cancel()
        await asyncio.sleep(0)
        gate.release()
        with pytest.raises(asyncio.CancelledError):
            await append
        await gate.left()
        assert_counts_true(outbox)  # the records are in the database: so in the count
        await outbox.append(Stream.EVENTS, b"c")
        assert_counts_true(outbox)
    finally:
        await outbox.close()


# ---------------------------------------------------------------------- any interleaving

_OPS = st.lists(
    st.tuples(
        st.sampled_from(["append", "ack", "pin", "expire", "reopen"]),
        st.sampled_from([Stream.EVENTS, Stream.TELEMETRY]),
        st.integers(1, 4),
        st.booleans(),  # cancelled while its write is held
    ),
    min_size=1,
    max_size=10,
)


async def _interleaving(path: Path, ops: list[tuple[str, Stream, int, bool]]) -> None:
    now = [1_800_000_000.0]
    settings = OutboxSettings(
        min_free_disk_bytes=0,
        memory_budget_bytes=8 << 20,
        fsync_in_place_below_ms=0,  # every group's fsync on the writer thread (gated)
        ttl_s={Stream.TELEMETRY: 5.0, Stream.RAW_REQUESTED: None, Stream.RAW_SAMPLED: None},
    )
    outbox, gate = _open(path, settings, clock=lambda: now[0])
    batches = 0
    try:
        for op, stream, n, cancelled in ops:
            if op == "reopen":
                await outbox.close()
                outbox, gate = _open(path, settings, clock=lambda: now[0])
                assert_counts_true(outbox)
                continue
            records = outbox.read(stream, max_records=n)
            work: Coroutine[Any, Any, object]
            if op == "append":
                work = outbox.append_many(stream, [bytes([65 + i]) * 100 * i for i in range(n)])
            elif op == "ack" and records:
                work = outbox.ack(stream, records[-1].seq)
            elif op == "pin" and records:
                batches += 1
                pin = BatchBoundary(stream, records[0].seq, records[-1].seq, f"b{batches}")
                work = outbox.pin_batch(pin)
            elif op == "expire":
                now[0] += 3
                work = outbox.run_maintenance()
            else:
                continue
            if cancelled and op != "append":
                await _cancel_while_written(gate, work)
            else:  # a cancelled producer leaves its group to the flusher (test above)
                await work
            assert_counts_true(outbox)
    finally:
        await outbox.close()
    persisted = {stream: persisted_usage(path, stream) for stream in Stream}
    assert persisted == await _held_on_disk(path)


@settings(max_examples=12, deadline=None)
@given(ops=_OPS)
def test_no_interleaving_of_cancelled_writes_makes_a_count_drift(
    ops: list[tuple[str, Stream, int, bool]],
) -> None:
    root = Path(tempfile.mkdtemp(prefix="outbox-cancel-"))
    try:
        asyncio.run(_interleaving(root / "outbox", ops))
    finally:
        shutil.rmtree(root, ignore_errors=True)
