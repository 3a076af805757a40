"""Capacity of the outbox: making room by eviction, backpressure, and TTL expiry.

Mixed into ``Outbox``; the decisions come from the pure policy in
``_outbox_eviction`` and the disk work from ``_outbox_evictor``, run on the
writer thread under the outbox's write lock.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence

from sync._outbox_eviction import (
    NEVER_EVICTED,
    ClassUsage,
    EvictionAction,
    EvictionStep,
    effective_ttl,
    plan_room,
)
from sync._outbox_evictor import coalesce_oldest, drop_expired, drop_oldest
from sync._outbox_records import BatchBoundary, OutboxClass, OutboxRecord
from sync._outbox_store import OutboxStore, Removal
from sync._outbox_writer import GroupCommitQueue, WriterThread
from sync.errors import OutboxClosed, OutboxFull
from sync.protocol import Stream
from sync.settings import Durability, OutboxSettings

__all__ = ["CapacityMixin", "EvictionListener", "TelemetryCoalescer"]

TelemetryCoalescer = Callable[[Sequence[bytes]], bytes]
"""Folds the payloads of the oldest telemetry records into one payload."""

EvictionListener = Callable[[OutboxClass, Sequence[OutboxRecord]], None]
"""Told which records eviction removed (e.g. to free the blobs of raw refs)."""


class CapacityMixin:
    """Eviction, backpressure and expiry for ``Outbox`` (which owns these attributes)."""

    _settings: OutboxSettings
    _clock: Callable[[], float]
    _store: OutboxStore
    _writer: WriterThread
    _lock: asyncio.Lock
    _queue: GroupCommitQueue
    _usage: dict[Stream, ClassUsage]
    _used_bytes: int
    _generation: dict[Stream, int]
    _watermarks: dict[Stream, int]
    _pins: dict[Stream, dict[int, BatchBoundary]]
    _evictions: Counter[str]
    _rejections: Counter[str]
    _room: asyncio.Event
    _coalesce: TelemetryCoalescer | None
    _on_evicted: EvictionListener | None
    _last_maintenance: float
    _closed: bool

    async def _make_room(self, nbytes: int) -> None:
        """Evict by class order; when nothing more can go, wait for acks, then OutboxFull."""
        deadline = time.monotonic() + self._settings.backpressure_wait_s
        while True:
            steps = self._plan(nbytes)
            if not steps and self._overflow(nbytes) <= 0:
                return
            if steps and await self._evict(steps) > 0 and self._overflow(nbytes) <= 0:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._rejections["full"] += 1
                raise OutboxFull(
                    f"outbox at its cap of {self._settings.max_bytes} bytes with only "
                    "never-evicted records; waiting for the cloud to acknowledge"
                )
            room = self._room
            try:
                await asyncio.wait_for(room.wait(), remaining)
            except TimeoutError:
                pass

    def _overflow(self, nbytes: int) -> int:
        """Bytes above the cap if ``nbytes`` were added now (<= 0: room); no sum per call."""
        return self._used_bytes + self._queue.pending_bytes + nbytes - self._settings.max_bytes

    def _usage_changed(self) -> None:
        """Call after every change of ``_usage``: keeps the total the append path checks."""
        self._used_bytes = sum(u.bytes for u in self._usage.values())

    def _plan(self, nbytes: int) -> list[EvictionStep]:
        return plan_room(
            self._usage,
            max_bytes=self._settings.max_bytes,
            pending_bytes=self._queue.pending_bytes,
            incoming_bytes=nbytes,
        )

    def _room_freed(self) -> None:
        self._room.set()
        self._room = asyncio.Event()

    def _eviction_floor(self, stream: Stream) -> int:
        """Eviction never touches acked or pinned (in-flight) records."""
        pinned = max((p.last_seq for p in self._pins[stream].values()), default=0)
        return max(self._watermarks[stream], pinned)

    async def _evict(self, steps: Sequence[EvictionStep]) -> int:
        """Carry out an eviction plan; returns the bytes freed."""
        freed = 0
        sync = self._settings.durability is Durability.SYNC
        async with self._lock:
            for step in steps:
                need = step.bytes_to_free - freed
                if need <= 0:
                    break
                stream, floor = step.stream, self._eviction_floor(step.stream)
                try:
                    removal, reason = await self._run_step(
                        step, floor, need, self._usage[stream], sync
                    )
                finally:
                    self._invalidate_walks(stream)
                self._removed(stream, removal, reason)
                freed += removal.bytes
        return freed

    async def _run_step(
        self, step: EvictionStep, floor: int, need: int, usage: ClassUsage, sync: bool
    ) -> tuple[Removal, str]:
        stream, reason = step.stream, step.reason
        if step.action is EvictionAction.DROP_OLDEST:
            removal = await self._writer.run(
                drop_oldest, self._store, stream, floor, need, usage, sync
            )
        elif step.action is EvictionAction.DROP_EXPIRED:
            removal = await self._writer.run(
                drop_expired,
                self._store,
                stream,
                floor,
                now=self._clock(),
                ttl=effective_ttl(stream, self._settings.ttl_s),
                need=need,
                stop_at_fresh=False,
                current=usage,
                sync=sync,
            )
        else:
            removal, coalesced = await self._writer.run(
                coalesce_oldest,
                self._store,
                stream,
                floor,
                need,
                usage,
                self._coalesce,
                sync,
            )
            reason = "telemetry_coalesced" if coalesced else "telemetry_dropped"
        return removal, reason

    def _invalidate_walks(self, stream: Stream) -> None:
        """After any removal from ``stream`` (done or failed): what reads walked is stale."""
        self._generation[stream] += 1

    def _removed(self, stream: Stream, removal: Removal, reason: str) -> None:
        if removal.count == 0 and not removal.records:
            return
        usage = self._usage[stream]
        self._usage[stream] = ClassUsage(
            max(0, usage.records - removal.count), max(0, usage.bytes - removal.bytes)
        )
        self._usage_changed()
        if removal.records:
            self._evictions[reason] += len(removal.records)
            if self._on_evicted is not None:
                self._on_evicted(stream, removal.records)
        self._room_freed()

    async def run_maintenance(self) -> dict[str, int]:
        """Drop records past their TTL or deadline; returns records removed per reason.

        Runs on its own every ``maintenance_interval_s`` during appends; the sync
        engine may also call it on a timer.
        """
        if self._closed:
            raise OutboxClosed("the outbox is closed")
        self._last_maintenance = time.monotonic()
        removed: Counter[str] = Counter()
        sync = self._settings.durability is Durability.SYNC
        async with self._lock:
            for stream in Stream:
                ttl = effective_ttl(stream, self._settings.ttl_s)
                if stream in NEVER_EVICTED or self._usage[stream].records == 0:
                    continue
                try:
                    removal = await self._writer.run(
                        drop_expired,
                        self._store,
                        stream,
                        self._eviction_floor(stream),
                        now=self._clock(),
                        ttl=ttl,
                        need=None,
                        stop_at_fresh=stream is not Stream.RAW_REQUESTED,
                        current=self._usage[stream],
                        sync=sync,
                    )
                finally:
                    self._invalidate_walks(stream)
                self._removed(stream, removal, f"{stream.value}_expired")
                removed[f"{stream.value}_expired"] += len(removal.records)
        return {k: v for k, v in removed.items() if v}
