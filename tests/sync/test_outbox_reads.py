"""The read path (bulk and one-at-a-time), bad values, and what acks count after reads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sync.errors import OutboxCorrupted
from sync.outbox import BlobRef, Outbox, OutboxRecord
from sync.protocol import Stream
from sync.settings import OutboxSettings
from tests.support.clock import FakeClock

NOW = 1_800_000_000.0
RECORD_OVERHEAD = 8 + 17  # key + value header


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[Callable[..., Outbox]]:
    outboxes: list[Outbox] = []

    def _open(
        clock: Callable[[], float] | None = None,
        ttl_s: dict[Stream, float | None] | None = None,
    ) -> Outbox:
        settings = OutboxSettings(min_free_disk_bytes=0)
        if ttl_s:
            settings = settings.model_copy(update={"ttl_s": settings.ttl_s | ttl_s})
        outbox = Outbox.open(tmp_path / "outbox", settings, clock=clock or FakeClock())
        outboxes.append(outbox)
        return outbox

    yield _open
    for outbox in outboxes:
        await outbox.close()


def _put_raw(outbox: Outbox, stream: Stream, seq: int, value: bytes) -> None:
    """Overwrite a stored value behind the outbox's back (a damaged record)."""
    outbox._store._cfs[stream][seq.to_bytes(8, "big")] = value


@pytest.mark.parametrize(
    ("stream", "ttl"),
    [(Stream.EVENTS, None), (Stream.TELEMETRY, 3600.0)],
    ids=["bulk-path", "one-at-a-time-path"],
)
@pytest.mark.parametrize(
    ("value", "says"),
    [(b"\x01short", "too short"), (b"\x07" + bytes(16) + b"payload", "unknown outbox value")],
    ids=["short", "unknown-version"],
)
async def test_a_bad_value_is_outbox_corrupted_naming_its_seq(
    opened: Callable[..., Outbox], stream: Stream, ttl: float | None, value: bytes, says: str
) -> None:
    outbox = opened(clock=FakeClock(), ttl_s={stream: ttl} if ttl else None)
    seqs = await outbox.append_many(stream, [b"a", b"b", b"c"])
    _put_raw(outbox, stream, seqs[1], value)
    with pytest.raises(OutboxCorrupted, match=rf"seq {seqs[1]}: .*{says}"):
        outbox.read(stream)
    assert [r.payload for r in outbox.read(stream, max_records=1)] == [b"a"]


def _stored_bytes(sizes: list[int]) -> int:
    return sum(size + RECORD_OVERHEAD for size in sizes)


async def test_acks_after_chained_reads_count_exactly_what_they_remove(
    opened: Callable[..., Outbox],
) -> None:
    outbox = opened()
    sizes = [(i * 37) % 300 for i in range(60)]
    seqs = await outbox.append_many(Stream.EVENTS, [b"x" * n for n in sizes])
    after, read = 0, list[OutboxRecord]()
    while len(read) < 30:  # chained reads: each continues where the last one ended
        batch = outbox.read(Stream.EVENTS, after, max_records=7)
        read += batch
        after = batch[-1].seq
    assert [r.seq for r in read] == seqs[: len(read)]

    def check(left: int) -> None:
        usage = outbox.stats().per_class[Stream.EVENTS]
        assert (usage.records, usage.bytes) == (len(sizes) - left, _stored_bytes(sizes[left:]))

    assert await outbox.ack(Stream.EVENTS, seqs[9]) == 10  # inside what was read
    check(10)
    outbox.read(Stream.EVENTS, max_records=5)
    assert await outbox.ack(Stream.EVENTS, seqs[39]) == 30  # beyond it
    check(40)
    outbox.read(Stream.EVENTS, max_records=20)  # exactly the rest
    assert await outbox.ack(Stream.EVENTS, seqs[-1]) == 20
    check(60)


async def test_a_read_skips_records_past_their_deadline_and_the_ack_counts_them(
    opened: Callable[..., Outbox],
) -> None:
    clock = FakeClock()
    outbox = opened(clock=clock, ttl_s={Stream.RAW_REQUESTED: None})
    refs = [BlobRef(f"{i:064x}", i) for i in range(4)]
    soon = await outbox.append_blob_ref(Stream.RAW_REQUESTED, refs[0], expires_at=NOW + 10)
    kept = [await outbox.append_blob_ref(Stream.RAW_REQUESTED, r) for r in refs[1:]]
    clock.now += 60
    records = outbox.read(Stream.RAW_REQUESTED)
    assert [r.seq for r in records] == kept
    assert await outbox.ack(Stream.RAW_REQUESTED, kept[-1]) == 4  # the expired one too
    usage = outbox.stats().per_class[Stream.RAW_REQUESTED]
    assert (usage.records, usage.bytes) == (0, 0)
    assert soon < kept[0]
