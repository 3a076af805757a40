"""The sending side of the outbox: read in seq order, pin batch boundaries, acknowledge.

Reads run on the event loop (RocksDB is thread-safe) and hide records of a group
whose fsync has not returned; acks and pins are written on the writer thread under
the write lock, with the watermark, counters and pins in the same WriteBatch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sync.errors import OutboxCorrupted, RecordRejected, SyncError
from sync.outbox.database import Database
from sync.outbox.eviction import effective_ttl
from sync.outbox.ledger import ClassLedger
from sync.outbox.records import MAX_SEQ, BatchBoundary, OutboxRecord
from sync.outbox.recovery import mark_corrupt
from sync.outbox.seqs import SeqCounter
from sync.outbox.to_the_end import to_the_end
from sync.outbox.writer import WriterThread
from sync.protocol import Stream
from sync.settings import Durability, OutboxSettings

__all__ = ["Drain", "check_class", "check_int"]


def check_class(stream: object) -> None:
    if not isinstance(stream, Stream):
        raise RecordRejected(f"unknown outbox class {stream!r}")


def check_int(name: str, value: object, minimum: int) -> None:
    """``value`` must be an int (not a bool) of at least ``minimum``: else RecordRejected."""
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, int)):
        raise RecordRejected(f"{name} must be an int, not {type(value).__name__}: {value!r}")
    if value < minimum:
        raise RecordRejected(f"{name} must be at least {minimum}: {value!r}")


class Drain:
    """``read``, ``ack``, ``pin_batch`` and what they leave (watermarks, pins)."""

    def __init__(
        self,
        settings: OutboxSettings,
        clock: Callable[[], float],
        database: Database,
        ledger: ClassLedger,
        seqs: SeqCounter,
        writer: WriterThread,
        lock: asyncio.Lock,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._database = database
        self._ledger = ledger
        self._seqs = seqs
        self._writer = writer
        self._lock = lock

    def read(
        self,
        stream: Stream,
        after_seq: int = 0,
        *,
        max_records: int = 1000,
        max_bytes: int = 4 << 20,
    ) -> list[OutboxRecord]:
        """Unacknowledged records with seq > ``after_seq``, in seq order, bounded.

        Returns at least one record when one exists, even if it exceeds ``max_bytes``.
        ``after_seq`` is a seq (an int >= 0; above every possible seq: nothing), the
        limits are ints >= 1; anything else is RecordRejected.
        """
        database, ledger = self._database, self._ledger
        database.check_open()
        check_class(stream)
        check_int("after_seq", after_seq, 0)
        check_int("max_records", max_records, 1)
        check_int("max_bytes", max_bytes, 1)
        generation = ledger.generation(stream)  # before the read's snapshot
        start = min(max(after_seq, ledger.watermarks[stream]), MAX_SEQ)
        try:
            records, walked = database.store.read(
                stream,
                start,
                max_records=max_records,
                max_bytes=max_bytes,
                now=self._clock(),
                ttl=effective_ttl(stream, self._settings.ttl_s),
            )
        except OutboxCorrupted as exc:
            mark_corrupt(database.path, str(exc))
            raise
        committed = self._seqs.committed_seq
        if records and records[-1].seq > committed:
            # A group is applied but its fsync has not returned: not acknowledged yet.
            return [r for r in records if r.seq <= committed]
        if walked.records:
            ledger.remember_walk(stream, generation, walked)
        elif start == ledger.watermarks[stream] and not self._lock.locked():
            # the whole class walked, expired records included, and no write in flight
            # (an ack's delete may be applied before its count is): the class is empty
            ledger.found_empty(stream)
        return records

    async def ack(self, stream: Stream, up_to_seq: int) -> int:
        """Delete every record of ``stream`` with seq <= ``up_to_seq``; returns how many.

        The watermark is persisted with the delete, so acked records are never
        read again, even after a crash.  Pins that are fully acked are dropped.
        ``up_to_seq`` is clamped to the highest committed seq; it must be an int >= 0.
        """
        database, ledger = self._database, self._ledger
        database.check_open()
        check_class(stream)
        check_int("up_to_seq", up_to_seq, 0)
        sync = self._settings.durability is Durability.SYNC
        async with self._lock:
            database.ensure_writable(0)
            watermark = ledger.watermarks[stream]
            up_to = min(up_to_seq, self._seqs.committed_seq)
            if up_to <= watermark:
                return 0
            # the delete and its booking in the ledger end together (``to_the_end``)
            return await to_the_end(self._remove(stream, watermark, up_to, sync))

    async def _remove(self, stream: Stream, watermark: int, up_to: int, sync: bool) -> int:
        """Range-delete ``(watermark, up_to]`` on the writer thread, then book it."""
        database, ledger = self._database, self._ledger
        done = ledger.pins_done(stream, up_to)
        known = ledger.known_walk(stream, watermark, up_to)
        try:
            removal = await self._writer.run(
                database.store.ack,
                stream,
                watermark,
                up_to,
                ledger.usage[stream],
                done,
                sync,
                known,
            )
        except SyncError as exc:
            database.failed(exc, 0)
            raise
        finally:
            ledger.invalidate_walks(stream)
        ledger.acked(stream, up_to, done)
        ledger.removed(stream, removal, "acked")
        return removal.count

    def acked_watermark(self, stream: Stream) -> int:
        check_class(stream)
        return self._ledger.watermarks[stream]

    async def pin_batch(self, boundary: BatchBoundary) -> None:
        """Persist (fsynced) a batch boundary before its records are sent.

        The write and its fsync run on the writer thread (the event loop goes on),
        under the write lock, so an ack cannot pass the pin while it is written.
        A boundary must name committed records (``last_seq`` at most the highest
        committed seq): a pin above it could never be acked and would hold back
        eviction of its class for good.
        """
        database = self._database
        database.check_open()
        if not isinstance(boundary, BatchBoundary):
            raise RecordRejected(f"expected a BatchBoundary, got {type(boundary).__name__}")
        check_class(boundary.stream)
        check_int("first_seq", boundary.first_seq, 1)
        check_int("last_seq", boundary.last_seq, boundary.first_seq)
        committed = self._seqs.committed_seq
        if boundary.last_seq > committed:
            raise RecordRejected(
                f"batch boundary {boundary!r} beyond the highest committed seq {committed}"
            )
        batch_id = boundary.batch_id
        if not isinstance(batch_id, str) or not batch_id:
            raise RecordRejected(f"batch id must be a non-empty str: {batch_id!r}")
        try:
            batch_id.encode()
        except UnicodeEncodeError as exc:
            raise RecordRejected(f"batch id is not valid unicode: {batch_id!r}") from exc
        async with self._lock:
            if boundary.last_seq <= self._ledger.watermarks[boundary.stream]:
                return  # already acknowledged: nothing will be sent again
            database.ensure_writable(0)
            await to_the_end(self._pin(boundary))

    async def _pin(self, boundary: BatchBoundary) -> None:
        """Write the pin on the writer thread, then book it (even if the caller is
        cancelled meanwhile: eviction must not pass a pin that is on disk)."""
        try:
            await self._writer.run(self._database.store.put_pin, boundary)
        except SyncError as exc:
            self._database.failed(exc, 0)
            raise
        self._ledger.add_pin(boundary)

    def pinned_batches(self, stream: Stream) -> list[BatchBoundary]:
        """Pinned, not yet fully acked batches of ``stream`` in seq order (survive restarts)."""
        check_class(stream)
        return self._ledger.pinned(stream)
