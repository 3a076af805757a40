"""What the outbox knows of each class in memory, and the one place it changes.

Per class: live records and bytes (``usage``, with their total for the append
path's cap check), the acknowledged watermark, the pinned batch boundaries, and
what reads walked since the last removal (so that an ack of a range just read
skips its counting scan).  Loaded from disk at open and after every reopen
(``adopt``); every removal (ack, eviction, expiry) goes through ``removed``,
which counts evictions, tells the eviction listener and wakes producers waiting
for room.  Each write's booking here runs even if the write's caller is
cancelled (``to_the_end``): every count persisted is made from this ledger, so
a booking skipped after a write that landed would be written back to disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence

from sync.outbox.eviction import ClassUsage
from sync.outbox.reader import Walked
from sync.outbox.records import BatchBoundary, LoadedState, OutboxRecord, Removal
from sync.protocol import Stream

__all__ = ["ClassLedger", "EvictionListener"]

log = logging.getLogger(__name__)

EvictionListener = Callable[[Stream, Sequence[OutboxRecord]], None]
"""Told which records eviction removed (e.g. to free the blobs of raw refs)."""


class ClassLedger:
    """Usage, watermarks, pins and read walks of every class (no I/O)."""

    def __init__(self, on_evicted: EvictionListener | None) -> None:
        self._on_evicted = on_evicted
        self.usage: dict[Stream, ClassUsage] = {}
        self.used_bytes = 0  # sum of usage bytes: what the append path checks the cap with
        self.watermarks: dict[Stream, int] = {}
        self.pins: dict[Stream, dict[int, BatchBoundary]] = {}
        self.evictions: Counter[str] = Counter()  # records removed, per reason
        # What reads walked since the last removal per class, tagged with the class's
        # removal generation (bumped by every removal, done or failed).
        self._walked: dict[Stream, tuple[int, Walked]] = {}
        self._generation: dict[Stream, int] = dict.fromkeys(Stream, 0)
        self._room = asyncio.Event()

    def adopt(self, state: LoadedState) -> None:
        """Take the counters, watermarks and pins read back from disk; forget walks."""
        self.usage, self.watermarks = state.usage, state.watermarks
        self._recount()
        self._walked.clear()
        for stream in Stream:
            self._generation[stream] += 1
        self.pins = {s: {} for s in Stream}
        for pin in state.pins:
            self.pins[pin.stream][pin.first_seq] = pin

    # ------------------------------------------------------------------ usage and room

    def added(self, counts: dict[Stream, ClassUsage]) -> None:
        """A group was committed: ``counts`` are the new totals of its classes."""
        self.usage.update(counts)
        self._recount()

    def _recount(self) -> None:
        self.used_bytes = sum(u.bytes for u in self.usage.values())

    def removed(self, stream: Stream, removal: Removal, reason: str) -> None:
        """Records left ``stream`` (acked, evicted or expired, as ``reason``)."""
        if removal.count == 0 and not removal.records:
            return
        usage = self.usage[stream]
        self.usage[stream] = ClassUsage(
            max(0, usage.records - removal.count), max(0, usage.bytes - removal.bytes)
        )
        self._recount()
        if removal.records:
            self.evictions[reason] += len(removal.records)
            if self._on_evicted is not None:
                self._on_evicted(stream, removal.records)
        self._room.set()
        self._room = asyncio.Event()

    def found_empty(self, stream: Stream) -> None:
        """A read from the watermark walked no record of ``stream``: nothing is left to
        send, whatever the count says.  A count left above zero would have the sync
        engine wait for those records for ever; it is set to zero and logged (the
        class's next write persists it)."""
        usage = self.usage[stream]
        if usage.records == 0 and usage.bytes == 0:
            return
        log.error(
            "outbox count of %s was %d records (%d B) but the class holds none: set to zero",
            stream.value,
            usage.records,
            usage.bytes,
        )
        self.usage[stream] = ClassUsage(0, 0)
        self._recount()

    async def wait_for_room(self, timeout: float) -> None:
        """Until the next removal, at most ``timeout`` seconds."""
        room = self._room
        try:
            await asyncio.wait_for(room.wait(), timeout)
        except TimeoutError:
            pass

    # ------------------------------------------------------------------ pins

    def eviction_floor(self, stream: Stream) -> int:
        """Eviction never touches acked or pinned (in-flight) records."""
        pinned = max((p.last_seq for p in self.pins[stream].values()), default=0)
        return max(self.watermarks[stream], pinned)

    def add_pin(self, boundary: BatchBoundary) -> None:
        self.pins[boundary.stream][boundary.first_seq] = boundary

    def acked(self, stream: Stream, up_to: int, pins_done: Sequence[BatchBoundary]) -> None:
        """The watermark of ``stream`` moved to ``up_to``; ``pins_done`` were dropped."""
        self.watermarks[stream] = up_to
        for pin in pins_done:
            self.pins[stream].pop(pin.first_seq, None)

    def pins_done(self, stream: Stream, up_to: int) -> list[BatchBoundary]:
        """The pins an ack up to ``up_to`` completes."""
        return [p for p in self.pins[stream].values() if p.last_seq <= up_to]

    def pinned(self, stream: Stream) -> list[BatchBoundary]:
        """Pins of ``stream`` not yet fully acked, in seq order."""
        watermark = self.watermarks[stream]
        pins = self.pins[stream].values()
        return sorted((p for p in pins if p.last_seq > watermark), key=lambda p: p.first_seq)

    # ------------------------------------------------------------------ read walks

    def generation(self, stream: Stream) -> int:
        """Take it before a read's snapshot; hand it back to ``remember_walk``."""
        return self._generation[stream]

    def invalidate_walks(self, stream: Stream) -> None:
        """After any removal from ``stream`` (done or failed): what reads walked is stale."""
        self._generation[stream] += 1

    def forget_walks(self, stream: Stream) -> None:
        """Records of ``stream`` moved (renumbered): drop its walk too."""
        self._walked.pop(stream, None)
        self._generation[stream] += 1

    def remember_walk(self, stream: Stream, generation: int, walked: Walked) -> None:
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

    def known_walk(self, stream: Stream, watermark: int, up_to: int) -> Walked | None:
        """The walk that counts ``(watermark, x]`` for some ``x <= up_to``, if still valid."""
        remembered = self._walked.get(stream)
        if remembered is None or remembered[0] != self._generation[stream]:
            return None
        walked = remembered[1]
        if walked.after_seq != watermark or walked.last_seq > up_to:
            return None
        return walked
