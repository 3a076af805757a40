"""The outbox against a real RocksDB in a temp dir: appends, reads, acks, pins, capacity."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sync.errors import OutboxClosed, OutboxFull, RecordRejected
from sync.outbox import BatchBoundary, BlobRef, Outbox, OutboxRecord
from sync.protocol import Stream
from sync.settings import Durability, OutboxSettings
from tests.support.clock import FakeClock
from tests.support.outbox import OpenOutbox

SHA = "ab" * 32


def payloads(records: list[OutboxRecord]) -> list[bytes]:
    return [r.payload for r in records]


async def test_append_read_ack_in_seq_order(open_outbox: OpenOutbox) -> None:
    outbox = open_outbox()
    first = await outbox.append(Stream.EVENTS, b"e1")
    crit = await outbox.append_many(Stream.CRITICAL, [b"c1", b"c2"])
    second = await outbox.append(Stream.EVENTS, b"e2")
    assert first < crit[0] < crit[1] < second
    events = outbox.read(Stream.EVENTS)
    assert [(r.seq, r.payload) for r in events] == [(first, b"e1"), (second, b"e2")]
    assert payloads(outbox.read(Stream.EVENTS, after_seq=first)) == [b"e2"]
    assert await outbox.ack(Stream.EVENTS, first) == 1
    assert outbox.acked_watermark(Stream.EVENTS) == first
    assert payloads(outbox.read(Stream.EVENTS, after_seq=0)) == [b"e2"]
    assert await outbox.ack(Stream.EVENTS, first) == 0  # idempotent
    assert payloads(outbox.read(Stream.CRITICAL)) == [b"c1", b"c2"]


async def test_read_is_bounded_by_count_and_bytes(open_outbox: OpenOutbox) -> None:
    outbox = open_outbox()
    await outbox.append_many(Stream.TELEMETRY, [bytes([i]) * 100 for i in range(10)])
    assert len(outbox.read(Stream.TELEMETRY, max_records=3)) == 3
    assert len(outbox.read(Stream.TELEMETRY, max_bytes=350)) == 2  # 117-byte values
    assert len(outbox.read(Stream.TELEMETRY, max_bytes=1)) == 1  # always progress


async def test_ack_beyond_committed_seq_does_not_hide_later_records(
    open_outbox: OpenOutbox,
) -> None:
    outbox = open_outbox()
    seq = await outbox.append(Stream.EVENTS, b"a")
    assert await outbox.ack(Stream.EVENTS, seq + 1_000_000) == 1
    later = await outbox.append(Stream.EVENTS, b"b")
    assert [r.seq for r in outbox.read(Stream.EVENTS)] == [later]


async def test_concurrent_appends_share_group_commits(open_outbox: OpenOutbox) -> None:
    outbox = open_outbox()
    seqs = await asyncio.gather(
        *(outbox.append(Stream.EVENTS, str(i).encode()) for i in range(500))
    )
    assert sorted(seqs) == seqs  # submission order is seq order
    assert len(set(seqs)) == 500
    records = outbox.read(Stream.EVENTS, max_records=1000)
    assert [r.payload for r in records] == [str(i).encode() for i in range(500)]


def hold_fsyncs(outbox: Outbox) -> threading.Event:
    """Make the outbox's fsyncs wait (on the writer thread) until the event is set."""
    disk_done = threading.Event()
    real_sync = outbox._store.sync_wal

    def slow_disk() -> None:
        disk_done.wait(10)
        real_sync()

    outbox._store.sync_wal = slow_disk  # type: ignore[method-assign]
    return disk_done


async def test_the_event_loop_runs_during_an_fsync_that_hides_its_records(
    open_outbox: OpenOutbox,
) -> None:
    """A group's fsync runs on the writer thread without the GIL: the event loop keeps
    serving (here: a read) meanwhile, and the read does not see the records yet."""
    outbox = open_outbox()
    await outbox.append(Stream.EVENTS, b"durable")
    disk_done = hold_fsyncs(outbox)
    pending = asyncio.create_task(outbox.append(Stream.EVENTS, b"being fsynced"))
    await asyncio.sleep(0.1)  # the group is applied; its fsync waits on the "disk"
    assert not pending.done()
    assert [r.payload for r in outbox.read(Stream.EVENTS)] == [b"durable"]
    disk_done.set()
    seq = await pending
    records = outbox.read(Stream.EVENTS)
    assert [(r.seq, r.payload) for r in records][-1] == (seq, b"being fsynced")


async def test_append_many_takes_any_iterable_and_is_not_changed_by_the_caller_meanwhile(
    open_outbox: OpenOutbox,
) -> None:
    outbox = open_outbox()
    # a generator is read once: its records are all stored (it was once used up by
    # the type check and silently stored nothing)
    seqs = await outbox.append_many(Stream.EVENTS, (bytes([65 + i]) for i in range(3)))
    assert [r.payload for r in outbox.read(Stream.EVENTS)] == [b"A", b"B", b"C"]
    assert [r.seq for r in outbox.read(Stream.EVENTS)] == seqs
    # a list grown by its owner while the append awaits its fsync: the seqs returned
    # are those of the records that were given
    payloads = [b"x", b"y"]
    pending = asyncio.ensure_future(outbox.append_many(Stream.EVENTS, payloads))
    await asyncio.sleep(0)
    payloads.append(b"z")
    assert len(await pending) == 2
    assert [r.payload for r in outbox.read(Stream.EVENTS)][-2:] == [b"x", b"y"]


async def test_seq_survives_reopen_and_is_never_reused(open_outbox: OpenOutbox) -> None:
    outbox = open_outbox()
    seqs = await outbox.append_many(Stream.EVENTS, [b"a", b"b"])
    await outbox.ack(Stream.EVENTS, seqs[-1])
    await outbox.close()
    reopened = open_outbox()
    assert reopened.acked_watermark(Stream.EVENTS) == seqs[-1]
    assert reopened.read(Stream.EVENTS) == []
    assert await reopened.append(Stream.CRITICAL, b"c") > seqs[-1]
    assert reopened.stats().per_class[Stream.EVENTS].records == 0


async def test_bad_input_is_rejected_and_counted(open_outbox: OpenOutbox) -> None:
    outbox = open_outbox(OutboxSettings(max_record_bytes=64))
    kept = await outbox.append(Stream.EVENTS, b"kept")
    with pytest.raises(RecordRejected):
        await outbox.append(Stream.EVENTS, "text")  # type: ignore[arg-type]
    with pytest.raises(RecordRejected):
        await outbox.append(Stream.EVENTS, b"x" * 65)
    with pytest.raises(RecordRejected):
        await outbox.append("events", b"x")  # type: ignore[arg-type]
    with pytest.raises(RecordRejected):
        await outbox.append(Stream.RAW_SAMPLED, b"raw bytes never go in RocksDB")
    with pytest.raises(RecordRejected):
        await outbox.append_blob_ref(Stream.EVENTS, BlobRef(SHA, 1, {}))
    with pytest.raises(RecordRejected):
        await outbox.append_blob_ref(Stream.RAW_SAMPLED, b"{}")  # type: ignore[arg-type]
    with pytest.raises(RecordRejected):
        await outbox.append(Stream.CRITICAL, b"x", expires_at=1.0)  # never evicted
    with pytest.raises(RecordRejected):  # all or nothing
        await outbox.append_many(Stream.EVENTS, [b"ok", b"y" * 100])
    with pytest.raises(RecordRejected):
        BlobRef("not-a-sha", 1, {})
    with pytest.raises(RecordRejected):
        BlobRef(SHA, -1, {})
    assert [r.seq for r in outbox.read(Stream.EVENTS)] == [kept]
    rejections = outbox.stats().rejections
    assert rejections == {"wrong_type": 3, "oversize": 2, "wrong_class": 3}


async def test_blob_refs_round_trip(open_outbox: OpenOutbox) -> None:
    outbox = open_outbox()
    ref = BlobRef(SHA, 12345, {"camera": "gate-1"})
    seq = await outbox.append_blob_ref(Stream.RAW_REQUESTED, ref)
    [record] = outbox.read(Stream.RAW_REQUESTED)
    assert record.seq == seq
    assert BlobRef.from_bytes(record.payload) == ref
    with pytest.raises(RecordRejected):
        BlobRef.from_bytes(b"garbage")


async def test_pins_survive_restart_and_drop_when_acked(open_outbox: OpenOutbox) -> None:
    outbox = open_outbox()
    seqs = await outbox.append_many(Stream.EVENTS, [b"a", b"b", b"c", b"d"])
    first = BatchBoundary(Stream.EVENTS, seqs[0], seqs[1], "dev.events.1-2")
    second = BatchBoundary(Stream.EVENTS, seqs[2], seqs[3], "dev.events.3-4")
    await outbox.pin_batch(second)
    await outbox.pin_batch(first)
    await outbox.close()
    outbox = open_outbox()
    assert outbox.pinned_batches(Stream.EVENTS) == [first, second]
    await outbox.ack(Stream.EVENTS, seqs[2])  # second only partly acked
    assert outbox.pinned_batches(Stream.EVENTS) == [second]
    await outbox.close()
    outbox = open_outbox()
    assert outbox.pinned_batches(Stream.EVENTS) == [second]
    with pytest.raises(RecordRejected):
        await outbox.pin_batch(BatchBoundary(Stream.EVENTS, 5, 4, "bad"))


async def test_pin_batch_waits_for_its_fsync_without_stopping_the_event_loop(
    open_outbox: OpenOutbox,
) -> None:
    outbox = open_outbox()
    seqs = await outbox.append_many(Stream.EVENTS, [b"a", b"b"])
    disk_done = hold_fsyncs(outbox)
    boundary = BatchBoundary(Stream.EVENTS, seqs[0], seqs[1], "dev.events.1-2")
    pinning = asyncio.create_task(outbox.pin_batch(boundary))
    ticks = 0
    for _ in range(10):  # the loop keeps running other tasks meanwhile
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks == 10 and not pinning.done()
    assert outbox.pinned_batches(Stream.EVENTS) == []  # not pinned before it is durable
    disk_done.set()
    await pinning
    assert outbox.pinned_batches(Stream.EVENTS) == [boundary]


async def test_capacity_evicts_raw_sampled_then_expired_requested_then_telemetry(
    open_outbox: OpenOutbox,
) -> None:
    clock = FakeClock()
    settings = OutboxSettings(max_bytes=1 << 20, max_record_bytes=64 << 10, backpressure_wait_s=0)
    outbox = open_outbox(settings, clock=clock)
    telemetry = await outbox.append_many(Stream.TELEMETRY, [b"t" * 60_000] * 4)
    for i in range(200):
        await outbox.append_blob_ref(Stream.RAW_SAMPLED, BlobRef(SHA, i, {}))
    requested = [
        await outbox.append_blob_ref(
            Stream.RAW_REQUESTED, BlobRef(SHA, i, {}), expires_at=clock.now + 10
        )
        for i in range(5)
    ]
    events = await outbox.append_many(Stream.EVENTS, [b"e" * 60_000] * 10)
    clock.now += 60  # the raw requests expire
    # Fill with critical records until only critical and events would remain.
    critical = [await outbox.append(Stream.CRITICAL, b"c" * 60_000) for _ in range(4)]
    stats = outbox.stats()
    assert stats.evictions.get("raw_sampled_capacity", 0) > 0
    assert outbox.read(Stream.RAW_REQUESTED) == []
    assert stats.evictions["raw_requested_expired"] == len(requested)
    assert stats.evictions.get("telemetry_dropped", 0) >= 1
    assert len(outbox.read(Stream.TELEMETRY)) < len(telemetry)
    assert [r.seq for r in outbox.read(Stream.EVENTS, max_records=100)] == events
    assert [r.seq for r in outbox.read(Stream.CRITICAL)] == critical
    with pytest.raises(OutboxFull):  # only never-evicted classes left: backpressure
        for _ in range(10):
            await outbox.append(Stream.CRITICAL, b"c" * 60_000)
    assert outbox.stats().rejections["full"] == 1
    assert [r.seq for r in outbox.read(Stream.EVENTS, max_records=100)] == events


async def test_backpressure_waits_for_an_ack(open_outbox: OpenOutbox) -> None:
    settings = OutboxSettings(max_bytes=1 << 20, max_record_bytes=64 << 10, backpressure_wait_s=5)
    outbox = open_outbox(settings)
    events = [await outbox.append(Stream.EVENTS, b"e" * 60_000) for _ in range(17)]
    waiting = asyncio.ensure_future(outbox.append(Stream.EVENTS, b"e" * 60_000))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await outbox.ack(Stream.EVENTS, events[5])
    assert await asyncio.wait_for(waiting, 2) > events[-1]


async def test_telemetry_coalescer_folds_the_oldest(open_outbox: OpenOutbox) -> None:
    settings = OutboxSettings(max_bytes=1 << 20, max_record_bytes=64 << 10, backpressure_wait_s=0)
    folded: list[int] = []

    def coalesce(items: object) -> bytes:
        assert isinstance(items, list)
        folded.append(len(items))
        return b"sum:%d" % len(items)

    outbox = open_outbox(settings, coalesce_telemetry=coalesce)
    await outbox.append_many(Stream.TELEMETRY, [b"t" * 50_000] * 16)
    await outbox.append_many(Stream.EVENTS, [b"e" * 50_000] * 8)
    telemetry = outbox.read(Stream.TELEMETRY, max_records=100)
    assert folded and telemetry[0].payload == b"sum:%d" % folded[0]
    assert [r.seq for r in telemetry] == sorted(r.seq for r in telemetry)
    assert outbox.stats().evictions["telemetry_coalesced"] == sum(folded)


async def test_ttl_expiry_runs_on_its_own_during_appends(open_outbox: OpenOutbox) -> None:
    """Nobody calls ``run_maintenance``: appends run it every ``maintenance_interval_s``."""
    clock = FakeClock()
    settings = OutboxSettings(ttl_s={Stream.TELEMETRY: 100.0}, maintenance_interval_s=1.0)
    outbox = open_outbox(settings, clock=clock)
    await outbox.append(Stream.TELEMETRY, b"old")
    clock.now += 200  # "old" is past its TTL, still counted until expiry removes it
    assert outbox.stats().per_class[Stream.TELEMETRY].records == 1
    await outbox.append(Stream.EVENTS, b"e1")  # before the interval: nothing runs
    assert outbox.stats().evictions.get("telemetry_expired", 0) == 0
    await asyncio.sleep(1.05)
    await outbox.append(Stream.EVENTS, b"e2")  # its group is followed by expiry
    await outbox.append(Stream.EVENTS, b"e3")  # which holds the write lock until done
    assert outbox.stats().evictions["telemetry_expired"] == 1
    assert outbox.stats().per_class[Stream.TELEMETRY].records == 0
    assert payloads(outbox.read(Stream.EVENTS)) == [b"e1", b"e2", b"e3"]


async def test_ttl_maintenance_drops_expired_but_never_critical(open_outbox: OpenOutbox) -> None:
    clock = FakeClock()
    settings = OutboxSettings(ttl_s={Stream.TELEMETRY: 100.0, Stream.CRITICAL: 1.0})
    outbox = open_outbox(settings, clock=clock)
    await outbox.append(Stream.TELEMETRY, b"old")
    await outbox.append(Stream.CRITICAL, b"alarm")
    clock.now += 50
    fresh = await outbox.append(Stream.TELEMETRY, b"fresh")
    clock.now += 60
    assert payloads(outbox.read(Stream.TELEMETRY)) == [b"fresh"]  # expired is not served
    assert await outbox.run_maintenance() == {"telemetry_expired": 1}
    stats = outbox.stats()
    assert stats.per_class[Stream.TELEMETRY].records == 1
    assert stats.per_class[Stream.CRITICAL].oldest_age_s == pytest.approx(110)
    assert [r.seq for r in outbox.read(Stream.TELEMETRY)] == [fresh]
    assert payloads(outbox.read(Stream.CRITICAL)) == [b"alarm"]


async def test_stats_count_depth_and_bytes(open_outbox: OpenOutbox) -> None:
    outbox = open_outbox()
    await outbox.append_many(Stream.EVENTS, [b"x" * 100] * 3)
    stats = outbox.stats()
    assert stats.per_class[Stream.EVENTS].records == 3
    assert stats.per_class[Stream.EVENTS].bytes == 3 * (8 + 17 + 100)
    assert stats.disk_bytes > 0
    assert stats.next_seq > 3


async def test_relaxed_durability_round_trips(open_outbox: OpenOutbox) -> None:
    outbox = open_outbox(OutboxSettings(durability=Durability.RELAXED))
    seq = await outbox.append(Stream.EVENTS, b"r")
    await outbox.close()
    assert [r.seq for r in open_outbox().read(Stream.EVENTS)] == [seq]


async def test_closed_outbox_refuses_work(open_outbox: OpenOutbox) -> None:
    outbox = open_outbox()
    pending = [asyncio.ensure_future(outbox.append(Stream.EVENTS, b"x")) for _ in range(5)]
    await asyncio.sleep(0)
    await outbox.close()
    assert len(await asyncio.gather(*pending)) == 5  # queued appends finish first
    with pytest.raises(OutboxClosed):
        await outbox.append(Stream.EVENTS, b"late")
    with pytest.raises(OutboxClosed):
        outbox.read(Stream.EVENTS)
    await outbox.close()  # idempotent


async def test_eviction_listener_hears_about_evicted_blob_refs(open_outbox: OpenOutbox) -> None:
    settings = OutboxSettings(max_bytes=1 << 20, max_record_bytes=64 << 10, backpressure_wait_s=0)
    evicted: list[tuple[Stream, list[int]]] = []
    outbox = open_outbox(
        settings,
        on_evicted=lambda stream, records: evicted.append((stream, [r.seq for r in records])),
    )
    await outbox.append_many(Stream.EVENTS, [b"e" * 60_000] * 17)
    refs = [
        await outbox.append_blob_ref(Stream.RAW_SAMPLED, BlobRef(SHA, i, {})) for i in range(400)
    ]
    assert evicted and all(stream is Stream.RAW_SAMPLED for stream, _ in evicted)
    dropped = [seq for _, seqs in evicted for seq in seqs]
    assert dropped == refs[: len(dropped)]  # oldest first
    left = [r.seq for r in outbox.read(Stream.RAW_SAMPLED, max_records=1000)]
    assert left == refs[len(dropped) :]


async def test_a_cancelled_producer_does_not_disturb_the_others(open_outbox: OpenOutbox) -> None:
    outbox = open_outbox()
    tasks = [asyncio.ensure_future(outbox.append(Stream.EVENTS, b"%d" % i)) for i in range(20)]
    await asyncio.sleep(0)
    tasks[5].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[5], asyncio.CancelledError)
    kept = [seq for seq in done if isinstance(seq, int)]
    assert len(kept) == 19
    stored = [r.seq for r in outbox.read(Stream.EVENTS)]
    assert set(kept) <= set(stored)  # the cancelled one may or may not have been written
    assert await outbox.append(Stream.EVENTS, b"next") > max(stored)
