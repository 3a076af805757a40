"""Which stream the engine sends next, and how long to wait when none is ready.

The scheduler (:mod:`sync.scheduler`) ranks the streams with a backlog; this module
says which streams have one now: a metadata stream once its batch is ready (full,
old enough, flushed, or a pinned batch to resend), a raw stream while a blob is left
to take or under way.  A young partial batch waits only while the link would idle:
it never lets a lower class (raw) go first; the higher metadata class is flushed
instead.
"""

from __future__ import annotations

from collections.abc import Callable

from sync.batches import BatchLimits
from sync.delivery_window import batch_ready
from sync.metadata_delivery import MetadataDelivery
from sync.outbox import Outbox
from sync.protocol import Stream
from sync.raw_delivery import RawDelivery
from sync.scheduler import Backlog, Decision, Scheduler

__all__ = ["NextStream"]


class NextStream:
    def __init__(
        self,
        outbox: Outbox,
        limits: BatchLimits,
        scheduler: Scheduler,
        meta: MetadataDelivery,
        raw: RawDelivery,
        clock: Callable[[], float],
    ) -> None:
        self.outbox, self.limits, self.scheduler = outbox, limits, scheduler
        self.meta, self.raw = meta, raw
        self._clock = clock

    def decide(self, *, flush: bool) -> tuple[Decision | None, float]:
        """The stream to send now, or None and how long to wait for one
        (``flush``: partial batches go without waiting for age)."""
        now = self._clock()
        stats = self.outbox.stats().per_class
        backlog: dict[Stream, Backlog] = {}
        unready: list[Stream] = []  # metadata waiting for a fuller (or older) batch
        wait_s = max(0.05, min(1.0, self.limits.max_age_s))  # poll for new appends
        for stream in Stream:
            item = stats[stream]
            if stream.is_metadata:
                flushed = flush or bool(self.outbox.pinned_batches(stream))
                if item.records and not batch_ready(item, self.limits, flush=flushed):
                    wait_s = min(wait_s, self.limits.max_age_s - item.oldest_age_s)
                    if stream not in self.meta.stalled:
                        unready.append(stream)
                    continue
            elif not (self.raw.has_next(stream) or self.raw.under_way(stream)):
                continue
            backlog[stream] = Backlog(item.records, item.bytes, item.oldest_age_s)
        decision = self.scheduler.decide(
            backlog, now, link_up=True, blocked=frozenset(self.meta.stalled)
        )
        if isinstance(decision, Decision):
            higher = [s for s in unready if s.priority < decision.stream.priority]
            if higher and not decision.aged:
                return Decision(higher[0], None), 0.0
            return decision, 0.0
        return None, min(wait_s, decision.wait_s)
