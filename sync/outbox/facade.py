"""The durable outbox: everything the appliance must deliver, in RocksDB, by priority class.

A newcomer's tour::

    outbox = Outbox.open("var/outbox")                 # quarantines a damaged DB
    seq = await outbox.append(Stream.EVENTS, payload)   # durable when it returns
    records = outbox.read(Stream.EVENTS, after_seq=0)   # in seq order, bounded
    await outbox.pin_batch(BatchBoundary(...))         # before sending a batch
    await outbox.ack(Stream.EVENTS, records[-1].seq)    # range delete
    await outbox.close()

``seq`` is one device-monotonic counter across all classes; it survives
restarts and crashes and is never handed out twice.  Durability modes
(``OutboxSettings.durability``): ``sync`` - an append returns once its
WriteBatch is fsynced (survives power loss); ``relaxed`` - once it is in the
write-ahead log (survives a process crash, not a power cut).  Concurrent
appends share one WriteBatch and one fsync (group commit).  An
``append_many`` may carry a receipt, stored with its records in the same
WriteBatch (``receipt``, ``drop_receipt``), so a producer can ask after a crash
whether its append was stored; docs/OUTBOX.md has the rest.

``Outbox`` is a facade: it builds the parts, hands each the state it works on,
and forwards to them.  Parts (one module each): ``database`` (the open store,
reopen, quarantine), ``ledger`` (per-class usage, watermarks, pins), ``seqs``
(the seq counter and its floor file), ``appends`` and ``commit`` (producers and
group commit), ``capacity`` (eviction, backpressure, expiry), ``drain`` (read,
pin, ack), ``receipts``, ``history`` (seq confirmation at the handshake).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from sync.errors import PermanentSyncError, SyncError
from sync.outbox.appends import Appends
from sync.outbox.capacity import Capacity, Expiry, TelemetryCoalescer
from sync.outbox.commit import FreeSpaceCheck, GroupCommit
from sync.outbox.database import Database
from sync.outbox.drain import Drain
from sync.outbox.fsync_placement import FsyncPlacement
from sync.outbox.history import SeqHistory
from sync.outbox.ledger import ClassLedger, EvictionListener
from sync.outbox.receipts import Receipts
from sync.outbox.records import (
    BatchBoundary,
    BlobRef,
    ClassStats,
    OutboxRecord,
    OutboxStats,
)
from sync.outbox.seqs import SeqCounter
from sync.outbox.store import OutboxStore
from sync.outbox.writer import GroupCommitQueue, WriterThread
from sync.protocol import Stream
from sync.settings import OutboxSettings

__all__ = ["Outbox"]


class Outbox:
    """Durable, prioritised store-and-forward queue.  Create with ``Outbox.open``."""

    def __init__(
        self,
        path: Path,
        settings: OutboxSettings,
        clock: Callable[[], float],
        coalesce_telemetry: TelemetryCoalescer | None,
        on_evicted: EvictionListener | None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        rejections: Counter[str] = Counter()  # records refused, per reason
        self._rejections = rejections
        self._ledger = ledger = ClassLedger(on_evicted)
        self._seqs = seqs = SeqCounter(path)
        self._database = database = Database(
            path, settings.memory_budget_bytes, clock, ledger, seqs, rejections
        )
        self._writer = writer = WriterThread()
        self._lock = lock = asyncio.Lock()  # one writer of the database at a time
        self._fsync_placement = FsyncPlacement(settings.fsync_in_place_below_ms / 1000)
        self._expiry = expiry = Expiry(settings, clock, database, ledger, writer, lock)
        free_space = FreeSpaceCheck(path, settings.min_free_disk_bytes, rejections)
        commit = GroupCommit(
            settings,
            database,
            ledger,
            seqs,
            writer,
            lock,
            self._fsync_placement,
            free_space,
            expiry,
        )
        self._queue = queue = GroupCommitQueue(commit.commit, settings.group_commit_max_records)
        capacity = Capacity(
            settings, clock, database, ledger, queue, writer, lock, rejections, coalesce_telemetry
        )
        self._appends = Appends(settings, clock, database, ledger, capacity, queue, rejections)
        self._drain = Drain(settings, clock, database, ledger, seqs, writer, lock)
        self._receipts = Receipts(settings, database, seqs, writer, lock)
        self._history = SeqHistory(database, ledger, seqs, writer, lock)

    @classmethod
    def open(
        cls,
        path: str | Path,
        settings: OutboxSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        coalesce_telemetry: TelemetryCoalescer | None = None,
        on_evicted: EvictionListener | None = None,
    ) -> Outbox:
        """Open (or create) the outbox at ``path``; a damaged database is quarantined.

        A path that is a regular file, or a directory holding no RocksDB file, is
        refused (PermanentSyncError), never moved aside.
        """
        if not isinstance(path, str | os.PathLike):
            raise PermanentSyncError(f"outbox path must be a str or a path, not {path!r}")
        if settings is not None and not isinstance(settings, OutboxSettings):
            raise PermanentSyncError(
                f"outbox settings must be OutboxSettings, not {type(settings).__name__}"
            )
        return cls(Path(path), settings or OutboxSettings(), clock, coalesce_telemetry, on_evicted)

    # ------------------------------------------------------------------ appends
    # The two hot calls hand back the part's coroutine (no second coroutine frame).

    def append(
        self, stream: Stream, payload: bytes, *, expires_at: float | None = None
    ) -> Coroutine[Any, Any, int]:
        """Store one metadata record; returns its seq once durable per the settings."""
        return self._appends.append(stream, payload, expires_at=expires_at)

    def append_many(
        self,
        stream: Stream,
        payloads: Sequence[bytes],
        *,
        receipt: bytes | str | None = None,
    ) -> Coroutine[Any, Any, list[int]]:
        """Store several records atomically (one WriteBatch), seqs in the given order.

        With a ``receipt`` (bytes or str, 1 to ``MAX_RECEIPT_BYTES``; else
        RecordRejected), the records and the receipt (``receipt(key)``: their first
        seq) are durable together or not at all; it needs at least one payload.
        """
        return self._appends.append_many(stream, payloads, receipt=receipt)

    async def append_blob_ref(
        self, stream: Stream, ref: BlobRef, *, expires_at: float | None = None
    ) -> int:
        """Store a reference to a raw blob (raw classes only; the bytes stay in the blob store)."""
        return await self._appends.append_blob_ref(stream, ref, expires_at=expires_at)

    # ------------------------------------------------------------------ reads and acks

    def read(
        self,
        stream: Stream,
        after_seq: int = 0,
        *,
        max_records: int = 1000,
        max_bytes: int = 4 << 20,
    ) -> list[OutboxRecord]:
        """Unacknowledged records with seq > ``after_seq``, in seq order, bounded
        (at least one when one exists; ``Drain.read``)."""
        return self._drain.read(stream, after_seq, max_records=max_records, max_bytes=max_bytes)

    async def ack(self, stream: Stream, up_to_seq: int) -> int:
        """Delete every record of ``stream`` with seq <= ``up_to_seq``; returns how many
        (the watermark is persisted with the delete; ``Drain.ack``)."""
        return await self._drain.ack(stream, up_to_seq)

    def acked_watermark(self, stream: Stream) -> int:
        return self._drain.acked_watermark(stream)

    async def pin_batch(self, boundary: BatchBoundary) -> None:
        """Persist (fsynced) a batch boundary of committed records before they are sent."""
        await self._drain.pin_batch(boundary)

    def pinned_batches(self, stream: Stream) -> list[BatchBoundary]:
        """Pinned, not yet fully acked batches of ``stream`` in seq order (survive restarts)."""
        return self._drain.pinned_batches(stream)

    async def run_maintenance(self) -> dict[str, int]:
        """Drop records past their TTL or deadline; returns records removed per reason.

        Runs on its own every ``maintenance_interval_s`` during appends; the sync
        engine may also call it on a timer.
        """
        return await self._expiry.run()

    # ------------------------------------------------------------------ receipts

    def receipt(self, key: bytes | str) -> int | None:
        """The first seq of the committed ``append_many`` that carried receipt ``key``,
        or None (never stored, not durable yet, or dropped; ``Receipts.receipt``)."""
        return self._receipts.receipt(key)

    def receipts(self, prefix: bytes | str = b"") -> dict[bytes, int]:
        """Every committed receipt whose key starts with ``prefix``: key -> first seq."""
        return self._receipts.receipts(prefix)

    async def drop_receipt(self, key: bytes | str) -> None:
        """Forget receipt ``key`` (no-op when not held), durable per the durability mode."""
        await self._receipts.drop_receipt(key)

    # ------------------------------------------------------------------ seq history

    @property
    def history_unconfirmed(self) -> bool:
        """True from the start until a handshake confirmed that the cloud holds none of
        the seqs issued since (``confirm_history``); nothing may be sent meanwhile."""
        return self._history.unconfirmed

    async def confirm_history(self, cloud_max: int) -> int:
        """Make every seq this outbox holds or issues lie above ``cloud_max``, the
        highest seq the cloud holds for this device; returns how many records were
        renumbered (0 almost always; ``SeqHistory.confirm``)."""
        return await self._history.confirm(cloud_max)

    def seq_now(self, seq: int) -> int:
        """The seq a record known as ``seq`` before a renumbering has now (a seq kept
        elsewhere, e.g. in a blob ref's meta); other seqs are returned as they are."""
        return self._seqs.seq_now(seq)

    def seq_then(self, seq: int) -> int:
        """The seq the record now known as ``seq`` had before any renumbering (to look it
        up in an index kept elsewhere); other seqs are returned as they are."""
        return self._seqs.seq_then(seq)

    # ------------------------------------------------------------------ status and lifecycle

    def stats(self) -> OutboxStats:
        now = self._clock()
        database, ledger = self._database, self._ledger
        per_class: dict[Stream, ClassStats] = {}
        for stream in Stream:
            usage = ledger.usage[stream]
            oldest = None
            if usage.records and not database.closed:
                try:
                    oldest = database.store.oldest_created_at(stream, ledger.watermarks[stream])
                except SyncError:
                    oldest = None  # stats never fail; the error surfaces on read/append
            age = max(0.0, now - oldest) if oldest is not None else 0.0
            per_class[stream] = ClassStats(usage.records, usage.bytes, age)
        return OutboxStats(
            per_class=per_class,
            disk_bytes=0 if database.closed else database.store.disk_bytes(),
            evictions=dict(ledger.evictions),
            rejections=dict(self._rejections),
            next_seq=self._seqs.next_seq,
            quarantined=list(database.quarantined),
            fsyncs={
                "in_place": self._fsync_placement.in_place,
                "on_thread": self._fsync_placement.on_thread,
            },
        )

    @property
    def path(self) -> Path:
        return self._database.path

    @property
    def _store(self) -> OutboxStore:
        """The open store (tests inject faults into it)."""
        return self._database.store

    async def close(self) -> None:
        """Finish queued appends, then close the database.  Idempotent."""
        database = self._database
        if database.closed:
            return
        database.mark_closed()
        await self._queue.drain()
        async with self._lock:
            self._writer.shutdown()
            database.store.close()

    async def __aenter__(self) -> Outbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
