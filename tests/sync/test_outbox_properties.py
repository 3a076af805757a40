"""Hypothesis state machine: any interleaving of append, read, ack, evict, close and
reopen keeps the outbox invariants.

* no acknowledged record is read again;
* no unacknowledged ``critical``/``events`` record is ever lost (eviction and
  TTL may remove only the other classes);
* order within a class holds, and seqs are never reused (across reopens too).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sync.errors import OutboxFull
from sync.outbox import BlobRef, Outbox, OutboxRecord
from sync.protocol import Stream
from sync.settings import OutboxSettings

KEPT = (Stream.CRITICAL, Stream.EVENTS)
METADATA = (Stream.CRITICAL, Stream.EVENTS, Stream.TELEMETRY)
RAW = (Stream.RAW_REQUESTED, Stream.RAW_SAMPLED)
RECORD_OVERHEAD = 8 + 17  # key + value header, counted against the cap with the payload
SETTINGS = OutboxSettings(
    max_bytes=1 << 20,
    max_record_bytes=64 << 10,
    backpressure_wait_s=0,
    min_free_disk_bytes=0,
    memory_budget_bytes=8 << 20,
    ttl_s={
        Stream.TELEMETRY: 3600.0,
        Stream.RAW_REQUESTED: None,
        Stream.RAW_SAMPLED: 600.0,
    },
)


class OutboxMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-prop-"))
        self.loop = asyncio.new_event_loop()
        self.now = 1_800_000_000.0
        self.outbox = self._open()
        # Unacknowledged records the outbox has confirmed, per class.
        self.model: dict[Stream, dict[int, bytes]] = {s: {} for s in Stream}
        # Every confirmed seq not yet acked, evicted or not (bounds what an ack removes).
        self.unacked: dict[Stream, set[int]] = {s: set() for s in Stream}
        self.watermark: dict[Stream, int] = dict.fromkeys(Stream, 0)
        self.highest_seq = 0
        self.counter = 0

    def _open(self) -> Outbox:
        return Outbox.open(self.dir / "outbox", SETTINGS, clock=lambda: self.now)

    def _payload(self, size: int) -> bytes:
        self.counter += 1
        return self.counter.to_bytes(4, "big") + b"p" * size

    def _confirmed(self, stream: Stream, seqs: list[int], payloads: list[bytes]) -> None:
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert seqs[0] > self.highest_seq, "seqs only grow, across reopens too"
        self.highest_seq = seqs[-1]
        self.model[stream].update(zip(seqs, payloads, strict=True))
        self.unacked[stream].update(seqs)

    def _full(self) -> None:
        """OutboxFull is legitimate only when nothing evictable is left."""
        per_class = self.outbox.stats().per_class
        assert per_class[Stream.RAW_SAMPLED].records == 0
        assert per_class[Stream.TELEMETRY].records == 0

    @rule(
        stream=st.sampled_from(METADATA),
        sizes=st.lists(st.sampled_from([0, 200, 20_000, 60_000]), min_size=1, max_size=4),
    )
    def append(self, stream: Stream, sizes: list[int]) -> None:
        payloads = [self._payload(size) for size in sizes]
        try:
            if len(payloads) == 1:
                seqs = [self.loop.run_until_complete(self.outbox.append(stream, payloads[0]))]
            else:
                seqs = self.loop.run_until_complete(self.outbox.append_many(stream, payloads))
        except OutboxFull:
            self._full()
            return
        self._confirmed(stream, seqs, payloads)

    @rule(stream=st.sampled_from(METADATA), count=st.integers(4, 12))
    def burst(self, stream: Stream, count: int) -> None:
        """Large appends, so that the 1 MiB cap, eviction and backpressure come into play."""
        self.append(stream, [60_000] * count)

    @rule(stream=st.sampled_from(RAW), ttl=st.none() | st.floats(1, 5000))
    def append_ref(self, stream: Stream, ttl: float | None) -> None:
        self.counter += 1
        ref = BlobRef(f"{self.counter:064x}", self.counter, {"n": str(self.counter)})
        expires_at = None if ttl is None else self.now + ttl
        try:
            coro = self.outbox.append_blob_ref(stream, ref, expires_at=expires_at)
            seq = self.loop.run_until_complete(coro)
        except OutboxFull:
            self._full()
            return
        self._confirmed(stream, [seq], [ref.to_bytes()])

    def _read_all(self, stream: Stream, max_records: int) -> list[OutboxRecord]:
        records: list[OutboxRecord] = []
        while batch := self.outbox.read(
            stream, records[-1].seq if records else 0, max_records=max_records
        ):
            records += batch
        return records

    @rule(stream=st.sampled_from(list(Stream)), max_records=st.integers(1, 50))
    def read(self, stream: Stream, max_records: int) -> None:
        records = self._read_all(stream, max_records)
        seqs = [r.seq for r in records]
        assert seqs == sorted(set(seqs)), "order within a class"
        assert all(seq > self.watermark[stream] for seq in seqs), "acked record read again"
        stored = {r.seq: r.payload for r in records}
        expected = self.model[stream]
        assert all(expected.get(seq) == payload for seq, payload in stored.items())
        if stream in KEPT:
            assert stored == expected, "an unacknowledged critical/events record was lost"
        else:  # eviction and TTL may have removed some: forget those
            self.model[stream] = stored

    @rule(stream=st.sampled_from(list(Stream)), data=st.data())
    def ack(self, stream: Stream, data: st.DataObject) -> None:
        known = sorted(self.model[stream])
        up_to = data.draw(st.sampled_from(known) if known else st.integers(0, self.highest_seq))
        removed = self.loop.run_until_complete(self.outbox.ack(stream, up_to))
        gone = [seq for seq in known if seq <= up_to]
        covered = {seq for seq in self.unacked[stream] if seq <= up_to}
        if stream in KEPT:
            assert removed == len(gone) == len(covered)
        else:  # records hidden by expiry are still removed, evicted ones are not
            assert removed <= len(covered)
        for seq in gone:
            del self.model[stream][seq]
        self.unacked[stream] -= covered
        self.watermark[stream] = max(self.watermark[stream], min(up_to, self.highest_seq))
        assert self.outbox.acked_watermark(stream) == self.watermark[stream]

    @rule(seconds=st.floats(0, 4000))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def evict_expired(self) -> None:
        self.loop.run_until_complete(self.outbox.run_maintenance())

    @rule()
    def reopen(self) -> None:
        self.loop.run_until_complete(self.outbox.close())
        self.outbox = self._open()
        assert self.outbox.stats().quarantined == []

    @precondition(lambda self: any(self.model[s] for s in KEPT))
    @invariant()
    def kept_classes_are_whole(self) -> None:
        per_class = self.outbox.stats().per_class
        for stream in KEPT:
            assert per_class[stream].records == len(self.model[stream])
            stored = sum(RECORD_OVERHEAD + len(p) for p in self.model[stream].values())
            assert per_class[stream].bytes == stored, "capacity accounting drifted"

    def teardown(self) -> None:
        self.loop.run_until_complete(self.outbox.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)


OutboxMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=40, deadline=None, print_blob=True
)
TestOutboxProperties = OutboxMachine.TestCase
