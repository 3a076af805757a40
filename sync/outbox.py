"""The durable outbox: everything the appliance must deliver, in RocksDB, by priority class.

A newcomer's tour::

    outbox = Outbox.open("var/outbox")                 # quarantines a damaged DB
    seq = await outbox.append(OutboxClass.EVENTS, payload)   # durable when it returns
    records = outbox.read(OutboxClass.EVENTS, after_seq=0)   # in seq order, bounded
    await outbox.pin_batch(BatchBoundary(...))         # before sending a batch
    await outbox.ack(OutboxClass.EVENTS, records[-1].seq)    # range delete
    await outbox.close()

``seq`` is one device-monotonic counter across all classes; it survives
restarts and crashes and is never handed out twice.  Durability modes
(``OutboxSettings.durability``): ``sync`` - an append returns once its
WriteBatch is fsynced (survives power loss); ``relaxed`` - once it is in the
write-ahead log (survives a process crash, not a power cut).  Concurrent
appends share one WriteBatch and one fsync (group commit, ``_outbox_writer``;
the append surface is ``_outbox_appends``).  Capacity, eviction and TTL follow
``_outbox_eviction``.  An ``append_many`` may carry a receipt, stored with its
records in the same WriteBatch (``receipt``, ``drop_receipt``), so a producer
can ask after a crash whether its append was stored; docs/OUTBOX.md has the rest.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from sync._outbox_capacity import EvictionListener, TelemetryCoalescer
from sync._outbox_eviction import effective_ttl
from sync._outbox_fsync_placement import FsyncPlacement
from sync._outbox_history import HistoryMixin
from sync._outbox_reader import Walked
from sync._outbox_records import (
    MAX_RECEIPT_BYTES,
    MAX_SEQ,
    BatchBoundary,
    BlobRef,
    ClassStats,
    OutboxClass,
    OutboxRecord,
    OutboxStats,
    check_receipt,
)
from sync._outbox_recovery import mark_corrupt, open_or_quarantine
from sync._outbox_writer import GroupCommitQueue, WriterThread
from sync.errors import OutboxCorrupted, PermanentSyncError, RecordRejected, SyncError
from sync.protocol import Stream
from sync.settings import Durability, OutboxSettings

__all__ = [
    "MAX_RECEIPT_BYTES",
    "BatchBoundary",
    "BlobRef",
    "ClassStats",
    "EvictionListener",
    "Outbox",
    "OutboxClass",
    "OutboxRecord",
    "OutboxStats",
    "TelemetryCoalescer",
]


def _check_class(stream: object) -> None:
    if not isinstance(stream, Stream):
        raise RecordRejected(f"unknown outbox class {stream!r}")


def _check_int(name: str, value: object, minimum: int) -> None:
    """``value`` must be an int (not a bool) of at least ``minimum``: else RecordRejected."""
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, int)):
        raise RecordRejected(f"{name} must be an int, not {type(value).__name__}: {value!r}")
    if value < minimum:
        raise RecordRejected(f"{name} must be at least {minimum}: {value!r}")


class Outbox(HistoryMixin):
    """Durable, prioritised store-and-forward queue.  Create with ``Outbox.open``."""

    def __init__(
        self,
        path: Path,
        settings: OutboxSettings,
        clock: Callable[[], float],
        coalesce_telemetry: TelemetryCoalescer | None,
        on_evicted: EvictionListener | None,
    ) -> None:
        self._path = path
        self._settings = settings
        self._clock = clock
        self._coalesce = coalesce_telemetry
        self._on_evicted = on_evicted
        self._store, state, self._quarantined = open_or_quarantine(
            path, settings.memory_budget_bytes, clock()
        )
        # What reads walked since the last removal per class, tagged with the class's
        # removal generation: lets an ack of a range just read skip its counting scan.
        self._walked: dict[Stream, tuple[int, Walked]] = {}
        self._generation: dict[Stream, int] = dict.fromkeys(Stream, 0)
        self._pins: dict[Stream, dict[int, BatchBoundary]] = {}
        self._next_seq = 1
        self._unconfirmed_from = None
        self._shift = None
        self._renumbered = ()
        try:
            self._adopt(state, starting=True)  # counters, watermarks, pins, seqs
        except BaseException:
            self._store.close()  # the LOCK goes with it: a later open can retry
            raise
        self._evictions: Counter[str] = Counter()
        self._rejections: Counter[str] = Counter()
        self._writer = WriterThread()
        self._fsync_placement = FsyncPlacement(settings.fsync_in_place_below_ms / 1000)
        self._lock = asyncio.Lock()
        self._queue = GroupCommitQueue(self._commit_group, settings.group_commit_max_records)
        self._room = asyncio.Event()
        self._closed = False
        self._broken = False
        self._last_maintenance = time.monotonic()
        self._written_since_free_check = 0
        self._free_margin = 0  # 0: ask the filesystem on the next group
        self._next_free_check = 0.0

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

    # ------------------------------------------------------------------ reads and acks

    def read(
        self,
        stream: OutboxClass,
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
        self._check_open()
        _check_class(stream)
        _check_int("after_seq", after_seq, 0)
        _check_int("max_records", max_records, 1)
        _check_int("max_bytes", max_bytes, 1)
        generation = self._generation[stream]  # before the read's snapshot
        try:
            records, walked = self._store.read(
                stream,
                min(max(after_seq, self._watermarks[stream]), MAX_SEQ),
                max_records=max_records,
                max_bytes=max_bytes,
                now=self._clock(),
                ttl=effective_ttl(stream, self._settings.ttl_s),
            )
        except OutboxCorrupted as exc:
            mark_corrupt(self._path, str(exc))
            raise
        if records and records[-1].seq > self._committed_seq:
            # A group is applied but its fsync has not returned: not acknowledged yet.
            return [r for r in records if r.seq <= self._committed_seq]
        if walked.records:
            self._remember_walk(stream, generation, walked)
        return records

    def _remember_walk(self, stream: Stream, generation: int, walked: Walked) -> None:
        """Keep what reads walked, joined with the previous walk when it continues it."""
        previous = self._walked.get(stream)
        if previous is not None and previous[0] == generation:
            before = previous[1]
            if before.last_seq == walked.after_seq:
                walked = Walked(
                    before.after_seq,
                    walked.last_seq,
                    before.records + walked.records,
                    before.bytes + walked.bytes,
                )
        self._walked[stream] = (generation, walked)

    def _known_walk(self, stream: Stream, watermark: int, up_to: int) -> Walked | None:
        """The walk that counts ``(watermark, x]`` for some ``x <= up_to``, if still valid."""
        remembered = self._walked.get(stream)
        if remembered is None or remembered[0] != self._generation[stream]:
            return None
        walked = remembered[1]
        if walked.after_seq != watermark or walked.last_seq > up_to:
            return None
        return walked

    async def ack(self, stream: OutboxClass, up_to_seq: int) -> int:
        """Delete every record of ``stream`` with seq <= ``up_to_seq``; returns how many.

        The watermark is persisted with the delete, so acked records are never
        read again, even after a crash.  Pins that are fully acked are dropped.
        ``up_to_seq`` is clamped to the highest committed seq; it must be an int >= 0.
        """
        self._check_open()
        _check_class(stream)
        _check_int("up_to_seq", up_to_seq, 0)
        sync = self._settings.durability is Durability.SYNC
        async with self._lock:
            self._ensure_writable(0)
            watermark = self._watermarks[stream]
            up_to = min(up_to_seq, self._committed_seq)
            if up_to <= watermark:
                return 0
            done = [p for p in self._pins[stream].values() if p.last_seq <= up_to]
            known = self._known_walk(stream, watermark, up_to)
            try:
                removal = await self._writer.run(
                    self._store.ack,
                    stream,
                    watermark,
                    up_to,
                    self._usage[stream],
                    done,
                    sync,
                    known,
                )
            except SyncError as exc:
                self._storage_failed(exc, 0)
                raise
            finally:
                self._invalidate_walks(stream)
            self._watermarks[stream] = up_to
            for pin in done:
                self._pins[stream].pop(pin.first_seq, None)
            self._removed(stream, removal, "acked")
        return removal.count

    def acked_watermark(self, stream: OutboxClass) -> int:
        _check_class(stream)
        return self._watermarks[stream]

    async def pin_batch(self, boundary: BatchBoundary) -> None:
        """Persist (fsynced) a batch boundary before its records are sent.

        The write and its fsync run on the writer thread (the event loop goes on),
        under the write lock, so an ack cannot pass the pin while it is written.
        A boundary must name committed records (``last_seq`` at most the highest
        committed seq): a pin above it could never be acked and would hold back
        eviction of its class for good.
        """
        self._check_open()
        if not isinstance(boundary, BatchBoundary):
            raise RecordRejected(f"expected a BatchBoundary, got {type(boundary).__name__}")
        _check_class(boundary.stream)
        _check_int("first_seq", boundary.first_seq, 1)
        _check_int("last_seq", boundary.last_seq, boundary.first_seq)
        if boundary.last_seq > self._committed_seq:
            raise RecordRejected(
                f"batch boundary {boundary!r} beyond the highest committed seq "
                f"{self._committed_seq}"
            )
        batch_id = boundary.batch_id
        if not isinstance(batch_id, str) or not batch_id:
            raise RecordRejected(f"batch id must be a non-empty str: {batch_id!r}")
        try:
            batch_id.encode()
        except UnicodeEncodeError as exc:
            raise RecordRejected(f"batch id is not valid unicode: {batch_id!r}") from exc
        async with self._lock:
            if boundary.last_seq <= self._watermarks[boundary.stream]:
                return  # already acknowledged: nothing will be sent again
            self._ensure_writable(0)
            try:
                await self._writer.run(self._store.put_pin, boundary)
            except SyncError as exc:
                self._storage_failed(exc, 0)
                raise
            self._pins[boundary.stream][boundary.first_seq] = boundary

    def pinned_batches(self, stream: OutboxClass) -> list[BatchBoundary]:
        """Pinned, not yet fully acked batches of ``stream`` in seq order (survive restarts)."""
        _check_class(stream)
        watermark = self._watermarks[stream]
        pins = self._pins[stream].values()
        return sorted((p for p in pins if p.last_seq > watermark), key=lambda p: p.first_seq)

    # ------------------------------------------------------------------ receipts

    def receipt(self, key: bytes | str) -> int | None:
        """The first seq of the committed ``append_many`` that carried receipt ``key``,
        or None (never stored, not durable yet, or dropped).  It outlives its records'
        ack or eviction: the caller drops it (``drop_receipt``) once it is of no use.
        A bad key is RecordRejected; a storage failure OutboxStorageError (retry)."""
        self._check_open()
        first_seq = self._store.receipt(check_receipt(key))
        if first_seq is None or first_seq > self._committed_seq:
            return None  # in a group whose fsync has not returned: not stored yet
        return first_seq

    def receipts(self, prefix: bytes | str = b"") -> dict[bytes, int]:
        """Every committed receipt whose key starts with ``prefix``: key -> first seq
        (a producer looks for the ones it forgot to drop, e.g. before a crash)."""
        self._check_open()
        start = b"" if not prefix else check_receipt(prefix)
        held = self._store.receipts(start)
        return {key: seq for key, seq in held.items() if seq <= self._committed_seq}

    async def drop_receipt(self, key: bytes | str) -> None:
        """Forget receipt ``key`` (no-op when not held), durable per the durability mode.
        Runs on the writer thread under the write lock, like the other meta writes."""
        self._check_open()
        raw = check_receipt(key)
        sync = self._settings.durability is Durability.SYNC
        async with self._lock:
            self._ensure_writable(0)
            try:
                await self._writer.run(self._store.drop_receipt, raw, sync)
            except SyncError as exc:
                self._storage_failed(exc, 0)
                raise

    # ------------------------------------------------------------------ status and lifecycle

    def stats(self) -> OutboxStats:
        now = self._clock()
        per_class: dict[OutboxClass, ClassStats] = {}
        for stream in Stream:
            usage = self._usage[stream]
            oldest = None
            if usage.records and not self._closed:
                try:
                    oldest = self._store.oldest_created_at(stream, self._watermarks[stream])
                except SyncError:
                    oldest = None  # stats never fail; the error surfaces on read/append
            age = max(0.0, now - oldest) if oldest is not None else 0.0
            per_class[stream] = ClassStats(usage.records, usage.bytes, age)
        return OutboxStats(
            per_class=per_class,
            disk_bytes=0 if self._closed else self._store.disk_bytes(),
            evictions=dict(self._evictions),
            rejections=dict(self._rejections),
            next_seq=self._next_seq,
            quarantined=list(self._quarantined),
            fsyncs={
                "in_place": self._fsync_placement.in_place,
                "on_thread": self._fsync_placement.on_thread,
            },
        )

    @property
    def path(self) -> Path:
        return self._path

    async def close(self) -> None:
        """Finish queued appends, then close the database.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._queue.drain()
        async with self._lock:
            self._writer.shutdown()
            self._store.close()

    async def __aenter__(self) -> Outbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
