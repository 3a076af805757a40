"""Capacity of the outbox: making room by eviction, backpressure, and TTL expiry.

The decisions come from the pure policy in ``eviction`` and the disk work from
``evictor``, run on the writer thread under the outbox's write lock; every
removal is booked in the ``ClassLedger``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence

from sync.errors import OutboxClosed, OutboxFull
from sync.outbox.database import Database
from sync.outbox.eviction import (
    NEVER_EVICTED,
    ClassUsage,
    EvictionAction,
    EvictionStep,
    effective_ttl,
    plan_room,
)
from sync.outbox.evictor import coalesce_oldest, drop_expired, drop_oldest
from sync.outbox.ledger import ClassLedger
from sync.outbox.records import Removal
from sync.outbox.to_the_end import to_the_end
from sync.outbox.writer import GroupCommitQueue, WriterThread
from sync.protocol import Stream
from sync.settings import Durability, OutboxSettings

__all__ = ["Capacity", "Expiry", "TelemetryCoalescer"]

TelemetryCoalescer = Callable[[Sequence[bytes]], bytes]
"""Folds the payloads of the oldest telemetry records into one payload."""


class Capacity:
    """Room under ``max_bytes``: evict by class order, else wait for acks, else refuse."""

    def __init__(
        self,
        settings: OutboxSettings,
        clock: Callable[[], float],
        database: Database,
        ledger: ClassLedger,
        queue: GroupCommitQueue,
        writer: WriterThread,
        lock: asyncio.Lock,
        rejections: Counter[str],
        coalesce: TelemetryCoalescer | None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._database = database
        self._ledger = ledger
        self._queue = queue  # its pending bytes count against the cap
        self._writer = writer
        self._lock = lock
        self._rejections = rejections
        self._coalesce = coalesce

    def overflow(self, nbytes: int) -> int:
        """Bytes above the cap if ``nbytes`` were added now (<= 0: room); no sum per call."""
        used = self._ledger.used_bytes + self._queue.pending_bytes
        return used + nbytes - self._settings.max_bytes

    async def make_room(self, nbytes: int) -> None:
        """Evict by class order; when nothing more can go, wait for acks, then OutboxFull."""
        deadline = time.monotonic() + self._settings.backpressure_wait_s
        while True:
            steps = self._plan(nbytes)
            if not steps and self.overflow(nbytes) <= 0:
                return
            if steps and await self._evict(steps) > 0 and self.overflow(nbytes) <= 0:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._rejections["full"] += 1
                raise OutboxFull(
                    f"outbox at its cap of {self._settings.max_bytes} bytes with only "
                    "never-evicted records; waiting for the cloud to acknowledge"
                )
            await self._ledger.wait_for_room(remaining)

    def _plan(self, nbytes: int) -> list[EvictionStep]:
        return plan_room(
            self._ledger.usage,
            max_bytes=self._settings.max_bytes,
            pending_bytes=self._queue.pending_bytes,
            incoming_bytes=nbytes,
        )

    async def _evict(self, steps: Sequence[EvictionStep]) -> int:
        """Carry out an eviction plan; returns the bytes freed."""
        async with self._lock:
            # after a failed write the ledger may be behind the database: reopen first
            self._database.ensure_writable(0)
            # each removal and its booking end together, even if the producer that
            # asked for room is cancelled meanwhile (``to_the_end``)
            return await to_the_end(self._evict_locked(steps))

    async def _evict_locked(self, steps: Sequence[EvictionStep]) -> int:
        freed = 0
        ledger = self._ledger
        sync = self._settings.durability is Durability.SYNC
        for step in steps:
            need = step.bytes_to_free - freed
            if need <= 0:
                break
            stream, floor = step.stream, ledger.eviction_floor(step.stream)
            try:
                removal, reason = await self._run_step(
                    step, floor, need, ledger.usage[stream], sync
                )
            finally:
                ledger.invalidate_walks(stream)
            ledger.removed(stream, removal, reason)
            freed += removal.bytes
        return freed

    async def _run_step(
        self, step: EvictionStep, floor: int, need: int, usage: ClassUsage, sync: bool
    ) -> tuple[Removal, str]:
        stream, reason, store = step.stream, step.reason, self._database.store
        if step.action is EvictionAction.DROP_OLDEST:
            removal = await self._writer.run(drop_oldest, store, stream, floor, need, usage, sync)
        elif step.action is EvictionAction.DROP_EXPIRED:
            removal = await self._writer.run(
                drop_expired,
                store,
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
                coalesce_oldest, store, stream, floor, need, usage, self._coalesce, sync
            )
            reason = "telemetry_coalesced" if coalesced else "telemetry_dropped"
        return removal, reason


class Expiry:
    """Drops records past their TTL or deadline, on its own every
    ``maintenance_interval_s`` during appends (``due``) or when asked (``run``)."""

    def __init__(
        self,
        settings: OutboxSettings,
        clock: Callable[[], float],
        database: Database,
        ledger: ClassLedger,
        writer: WriterThread,
        lock: asyncio.Lock,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._database = database
        self._ledger = ledger
        self._writer = writer
        self._lock = lock
        self._last_run = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self._last_run >= self._settings.maintenance_interval_s

    async def run(self) -> dict[str, int]:
        """Drop expired records of every evictable class; records removed per reason."""
        if self._database.closed:
            raise OutboxClosed("the outbox is closed")
        self._last_run = time.monotonic()
        async with self._lock:
            # after a failed write the ledger may be behind the database: reopen first
            self._database.ensure_writable(0)
            # each removal and its booking end together (``to_the_end``)
            return await to_the_end(self._expire_locked())

    async def _expire_locked(self) -> dict[str, int]:
        removed: Counter[str] = Counter()
        ledger = self._ledger
        sync = self._settings.durability is Durability.SYNC
        for stream in Stream:
            ttl = effective_ttl(stream, self._settings.ttl_s)
            if stream in NEVER_EVICTED or ledger.usage[stream].records == 0:
                continue
            try:
                removal = await self._writer.run(
                    drop_expired,
                    self._database.store,
                    stream,
                    ledger.eviction_floor(stream),
                    now=self._clock(),
                    ttl=ttl,
                    need=None,
                    stop_at_fresh=stream is not Stream.RAW_REQUESTED,
                    current=ledger.usage[stream],
                    sync=sync,
                )
            finally:
                ledger.invalidate_walks(stream)
            ledger.removed(stream, removal, f"{stream.value}_expired")
            removed[f"{stream.value}_expired"] += len(removal.records)
        return {k: v for k, v in removed.items() if v}
