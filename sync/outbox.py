"""The durable outbox: everything the appliance must deliver, in RocksDB, by priority class.

A newcomer's tour::

    outbox = Outbox.open("var/outbox")                 # quarantines a damaged DB
    seq = await outbox.append(OutboxClass.EVENTS, payload)   # durable when it returns
    records = outbox.read(OutboxClass.EVENTS, after_seq=0)   # in seq order, bounded
    outbox.pin_batch(BatchBoundary(...))               # before sending a batch
    await outbox.ack(OutboxClass.EVENTS, records[-1].seq)    # range delete
    await outbox.close()

``seq`` is one device-monotonic counter across all classes; it survives
restarts and crashes and is never handed out twice.  Durability modes
(``OutboxSettings.durability``): ``sync`` - an append returns once its
WriteBatch is fsynced (survives power loss); ``relaxed`` - once it is in the
write-ahead log (survives a process crash, not a power cut).  Concurrent
appends share one WriteBatch and one fsync (group commit, ``_outbox_writer``).
Capacity, eviction and TTL follow ``_outbox_eviction``; docs/OUTBOX.md has the rest.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, NoReturn

from sync._outbox_capacity import CapacityMixin, EvictionListener, TelemetryCoalescer
from sync._outbox_eviction import NEVER_EVICTED, ClassUsage, effective_ttl
from sync._outbox_reader import Walked
from sync._outbox_records import (
    KEY_SIZE,
    VALUE_HEADER,
    BatchBoundary,
    BlobRef,
    ClassStats,
    OutboxClass,
    OutboxRecord,
    OutboxStats,
    encode_header,
)
from sync._outbox_recovery import mark_corrupt, open_or_quarantine
from sync._outbox_writer import GroupCommitQueue, PendingAppend, WriterThread
from sync.errors import (
    OutboxClosed,
    OutboxCorrupted,
    OutboxDiskFull,
    RecordRejected,
    SyncError,
)
from sync.protocol import RAW_STREAMS, Stream
from sync.settings import Durability, OutboxSettings

__all__ = [
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

SEQ_BLOCK: Final = 1 << 16  # seqs reserved on disk ahead of use; a crash skips the rest
_RECORD_OVERHEAD: Final = KEY_SIZE + VALUE_HEADER  # bytes a record counts beyond its payload
_METADATA_CLASSES: Final = frozenset(Stream).difference(RAW_STREAMS)
_FREE_CHECK_INTERVAL_S: Final = 0.25


class Outbox(CapacityMixin):
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
        self._usage = state.usage
        self._usage_changed()
        self._watermarks = state.watermarks
        # What reads walked since the last removal per class, tagged with the class's
        # removal generation: lets an ack of a range just read skip its counting scan.
        self._walked: dict[Stream, tuple[int, Walked]] = {}
        self._generation: dict[Stream, int] = dict.fromkeys(Stream, 0)
        self._pins: dict[Stream, dict[int, BatchBoundary]] = {s: {} for s in Stream}
        for pin in state.pins:
            self._pins[pin.stream][pin.first_seq] = pin
        floor = max([state.reserved_until, state.max_seq + 1, *self._watermarks.values()])
        self._next_seq = max(1, floor)
        self._committed_seq = self._next_seq - 1
        self._reserved_until = self._next_seq + SEQ_BLOCK
        self._store.reserve_seqs(self._reserved_until)
        self._evictions: Counter[str] = Counter()
        self._rejections: Counter[str] = Counter()
        self._writer = WriterThread()
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
        """Open (or create) the outbox at ``path``; a damaged database is quarantined."""
        return cls(Path(path), settings or OutboxSettings(), clock, coalesce_telemetry, on_evicted)

    # ------------------------------------------------------------------ appends

    async def append(
        self, stream: OutboxClass, payload: bytes, *, expires_at: float | None = None
    ) -> int:
        """Store one metadata record; returns its seq once durable per the settings."""
        # The hot path of many concurrent producers: every check inlined, each one
        # falls back to the general (slow, counting) path when it fails.
        if type(stream) is not Stream or stream not in _METADATA_CLASSES:
            self._check_metadata_class(stream)
        if type(payload) is not bytes:
            payload = self._as_bytes(payload)
        if expires_at is not None or self._closed:
            return await self._submit(stream, [payload], expires_at)
        size = len(payload)
        if size > self._settings.max_record_bytes:
            return await self._submit(stream, [payload], None)  # rejects, counted
        nbytes = size + _RECORD_OVERHEAD
        if self._used_bytes + self._queue.pending_bytes + nbytes > self._settings.max_bytes:
            return await self._submit(stream, [payload], None)  # makes room
        value = encode_header(self._clock(), None) + payload
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.submit(PendingAppend(stream, [value], nbytes, future))
        return await future

    async def append_many(self, stream: OutboxClass, payloads: Sequence[bytes]) -> list[int]:
        """Store several records atomically (one WriteBatch), seqs in the given order."""
        self._check_metadata_class(stream)
        if isinstance(payloads, bytes | bytearray | str):
            self._reject("wrong_type", "append_many takes a sequence of payloads")
        if set(map(type, payloads)) <= {bytes}:
            data = list(payloads)  # all bytes: no call per payload
        else:
            data = [self._as_bytes(p) for p in payloads]
        if not data:
            return []
        first = await self._submit(stream, data, None)
        return list(range(first, first + len(data)))

    async def append_blob_ref(
        self, stream: OutboxClass, ref: BlobRef, *, expires_at: float | None = None
    ) -> int:
        """Store a reference to a raw blob (raw classes only; the bytes stay in the blob store)."""
        if stream not in RAW_STREAMS:
            self._reject("wrong_class", f"blob refs go to raw classes, not {stream!r}")
        if not isinstance(ref, BlobRef):
            self._reject("wrong_type", f"expected a BlobRef, got {type(ref).__name__}")
        return await self._submit(stream, [ref.to_bytes()], expires_at)

    def _check_metadata_class(self, stream: object) -> None:
        if not isinstance(stream, Stream):
            self._reject("wrong_class", f"unknown outbox class {stream!r}")
        if stream in RAW_STREAMS:
            self._reject("wrong_class", f"raw class {stream}: use append_blob_ref, not bytes")

    def _reject(self, reason: str, message: str) -> NoReturn:
        self._rejections[reason] += 1
        raise RecordRejected(message)

    async def _submit(self, stream: Stream, data: list[bytes], expires_at: float | None) -> int:
        """Queue ``data`` (non-empty) for the next group commit; returns the first seq."""
        self._check_open()
        if expires_at is not None and (
            stream in NEVER_EVICTED
            or isinstance(expires_at, bool)
            or not isinstance(expires_at, int | float)
            or not math.isfinite(expires_at)
        ):
            self._reject("wrong_type", f"expires_at not allowed here: {expires_at!r}")
        limit = self._settings.max_record_bytes
        largest = len(data[0]) if len(data) == 1 else max(map(len, data))
        if largest > limit:
            self._reject("oversize", f"record of {largest} bytes exceeds {limit}")
        header = encode_header(self._clock(), expires_at)
        values = [header + p for p in data]
        nbytes = sum(map(len, data)) + _RECORD_OVERHEAD * len(values)
        if self._overflow(nbytes) > 0:  # room is the common case: no eviction planning
            await self._make_room(nbytes)
            self._check_open()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.submit(PendingAppend(stream, values, nbytes, future))
        return await future

    def _as_bytes(self, payload: object) -> bytes:
        if type(payload) is bytes:
            return payload
        if not isinstance(payload, bytes | bytearray | memoryview):
            self._reject("wrong_type", f"payload must be bytes, not {type(payload).__name__}")
        return bytes(payload)

    async def _commit_group(self, group: list[PendingAppend]) -> None:
        async with self._lock:
            first_seq = seq = self._next_seq
            # Consecutive appends to one class become one run (one loop of puts).
            runs: list[tuple[Stream, int, list[bytes]]] = []
            added: dict[Stream, list[int]] = {}  # stream -> [records, bytes]
            run_stream: Stream | None = None
            run_values: list[bytes] = []
            total = [0, 0]
            for item in group:
                if item.stream is not run_stream:
                    run_stream, run_values = item.stream, []
                    runs.append((run_stream, seq, run_values))
                    total = added.setdefault(run_stream, [0, 0])
                run_values += item.values
                seq += len(item.values)
                total[1] += item.nbytes
            for stream, values in ((run[0], run[2]) for run in runs):
                added[stream][0] += len(values)
            records = seq - first_seq
            self._ensure_writable(records)
            self._check_free_space(records, sum(b for _, b in added.values()))
            usage = self._usage
            counts = {
                stream: ClassUsage(usage[stream].records + n, usage[stream].bytes + b)
                for stream, (n, b) in added.items()
            }
            self._next_seq = seq
            reserve = seq + SEQ_BLOCK if seq > self._reserved_until else None
            sync = self._settings.durability is Durability.SYNC or reserve is not None
            try:
                await self._writer.run(self._store.write_records, runs, counts, reserve, sync)
            except SyncError as exc:
                self._storage_failed(exc, records)
                raise
            self._committed_seq = seq - 1
            usage.update(counts)
            self._usage_changed()
            if reserve is not None:
                self._reserved_until = reserve
        for item in group:
            future = item.future
            if not future.done():
                future.set_result(first_seq)
            first_seq += len(item.values)
        if time.monotonic() - self._last_maintenance >= self._settings.maintenance_interval_s:
            await self.run_maintenance()

    def _check_free_space(self, records: int, nbytes: int) -> None:
        """Refuse the group when the filesystem is below ``min_free_disk_bytes``.

        ``statvfs`` is not free either: far from the limit it is asked at most every
        ``_FREE_CHECK_INTERVAL_S`` or after half of the margin seen last was written;
        near the limit (and after a refusal) on every group.
        """
        minimum = self._settings.min_free_disk_bytes
        if not minimum:
            return
        self._written_since_free_check += nbytes
        if (
            self._written_since_free_check < self._free_margin
            and time.monotonic() < self._next_free_check
        ):
            return
        free = shutil.disk_usage(self._path).free
        self._written_since_free_check = 0
        self._free_margin = max(0, free - minimum) // 2
        self._next_free_check = time.monotonic() + _FREE_CHECK_INTERVAL_S
        if free < minimum:
            self._rejections["disk_full"] += records
            raise OutboxDiskFull(f"only {free} bytes free under {self._path}")

    def _ensure_writable(self, records: int) -> None:
        """After a failed write RocksDB refuses more until reopened: reopen first."""
        if not self._broken:
            return
        try:
            self._reopen()
        except SyncError as exc:
            self._storage_failed(exc, records)
            raise

    def _storage_failed(self, exc: SyncError, records: int) -> None:
        """Count a failed write (``records`` refused) and remember to reopen or quarantine."""
        if isinstance(exc, OutboxCorrupted):
            mark_corrupt(self._path, str(exc))
            reason = "corrupted"
        else:
            reason = "disk_full" if isinstance(exc, OutboxDiskFull) else "storage_error"
            self._broken = True
        if records:
            self._rejections[reason] += records

    def _reopen(self) -> None:
        """Reopen after an I/O error (RocksDB refuses writes until then); state is reloaded."""
        self._store.close()
        self._store, state, quarantined = open_or_quarantine(
            self._path, self._settings.memory_budget_bytes, self._clock()
        )
        self._quarantined += quarantined
        self._usage, self._watermarks = state.usage, state.watermarks
        self._usage_changed()
        self._walked.clear()
        for stream in Stream:
            self._generation[stream] += 1
        self._pins = {s: {} for s in Stream}
        for pin in state.pins:
            self._pins[pin.stream][pin.first_seq] = pin
        self._next_seq = max(self._next_seq, state.reserved_until, state.max_seq + 1)
        self._committed_seq = self._next_seq - 1
        self._reserved_until = self._next_seq + SEQ_BLOCK
        self._store.reserve_seqs(self._reserved_until)
        self._broken = False

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
        """
        self._check_open()
        if not isinstance(stream, Stream):
            raise RecordRejected(f"unknown outbox class {stream!r}")
        if max_records < 1 or max_bytes < 1:
            raise ValueError("max_records and max_bytes must be positive")
        generation = self._generation[stream]  # before the read's snapshot
        try:
            records, walked = self._store.read(
                stream,
                max(after_seq, self._watermarks[stream]),
                max_records=max_records,
                max_bytes=max_bytes,
                now=self._clock(),
                ttl=effective_ttl(stream, self._settings.ttl_s),
            )
        except OutboxCorrupted as exc:
            mark_corrupt(self._path, str(exc))
            raise
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
        """
        self._check_open()
        if not isinstance(stream, Stream):
            raise RecordRejected(f"unknown outbox class {stream!r}")
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
        return self._watermarks[stream]

    def pin_batch(self, boundary: BatchBoundary) -> None:
        """Persist (fsynced) a batch boundary before its records are sent."""
        self._check_open()
        if not boundary.batch_id or not 0 < boundary.first_seq <= boundary.last_seq:
            raise RecordRejected(f"invalid batch boundary {boundary!r}")
        if boundary.last_seq <= self._watermarks[boundary.stream]:
            return  # already acknowledged: nothing will be sent again
        self._store.put_pin(boundary)
        self._pins[boundary.stream][boundary.first_seq] = boundary

    def pinned_batches(self, stream: OutboxClass) -> list[BatchBoundary]:
        """Pinned, not yet fully acked batches of ``stream`` in seq order (survive restarts)."""
        watermark = self._watermarks[stream]
        pins = self._pins[stream].values()
        return sorted((p for p in pins if p.last_seq > watermark), key=lambda p: p.first_seq)

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
        )

    @property
    def path(self) -> Path:
        return self._path

    def _check_open(self) -> None:
        if self._closed:
            raise OutboxClosed("the outbox is closed")

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
