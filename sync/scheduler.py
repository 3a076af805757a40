"""What to send next: the pure scheduler of the sync engine (no I/O, no clock of its own).

The engine feeds it the backlog per class and the time; it answers with one
:class:`Decision` - send from this stream, up to this many bytes - or
:class:`Idle` with the reason and how long to wait.  Rules, in order:

1. Nothing leaves while the link is down or the engine is paused.
2. ``critical`` always goes first and is never held back by a budget or aging.
3. Otherwise strict priority: ``events`` > ``telemetry`` > ``raw_requested`` >
   ``raw_sampled`` - with **aging**: a class whose oldest record has waited at
   least ``aging_after_s`` is *aged* and is guaranteed ``aging_share`` of the
   bytes sent since it became aged.  When its share falls below that it goes
   before the higher (non-critical) classes, so no class starves forever.
4. **Daily budgets** (metered links): a class whose bytes sent today (UTC day)
   reached its ``daily_budget_bytes`` is skipped until the next day; a decision
   never grants more than what is left of the budget.

The global bandwidth cap is a separate pure :class:`TokenBucket` that the
transport consults before each piece it writes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from sync.protocol import Stream

__all__ = [
    "Backlog",
    "Decision",
    "Idle",
    "IdleReason",
    "Scheduler",
    "SchedulerPolicy",
    "TokenBucket",
    "utc_day",
]

SECONDS_PER_DAY: Final = 86_400.0


def utc_day(now: float) -> int:
    """Days since the epoch (UTC) - the budget period of ``now``."""
    return int(now // SECONDS_PER_DAY)


@dataclass(frozen=True, slots=True)
class Backlog:
    """What one class holds: records and bytes waiting, and how long the oldest has waited."""

    records: int = 0
    bytes: int = 0
    oldest_age_s: float = 0.0

    @property
    def empty(self) -> bool:
        return self.records <= 0


@dataclass(frozen=True, slots=True)
class SchedulerPolicy:
    """The knobs of :class:`Scheduler` (built from ``SyncSettings``)."""

    aging_after_s: float = 3600.0
    aging_share: float = 0.1
    daily_budget_bytes: Mapping[Stream, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.aging_after_s > 0:
            raise ValueError("aging_after_s must be positive")
        if not 0 < self.aging_share <= 1:
            raise ValueError("aging_share must be in (0, 1]")


class IdleReason(StrEnum):
    PAUSED = "paused"
    OFFLINE = "offline"
    NOTHING_PENDING = "nothing_pending"
    BUDGET_EXHAUSTED = "budget_exhausted"


@dataclass(frozen=True, slots=True)
class Decision:
    """Send from ``stream``, at most ``max_bytes`` (None: no budget limit); ``aged`` tells why."""

    stream: Stream
    max_bytes: int | None
    aged: bool = False


@dataclass(frozen=True, slots=True)
class Idle:
    reason: IdleReason
    wait_s: float  # math.inf: until something changes (an append, a resume, the link)


@dataclass(slots=True)
class _AgingWindow:
    """Bytes sent overall and to one aged class since it became aged."""

    total_at_start: int
    own_at_start: int


class Scheduler:
    """Decides the next stream to send from.  Feed it every byte sent via ``record_sent``."""

    def __init__(self, policy: SchedulerPolicy | None = None) -> None:
        self.policy = policy or SchedulerPolicy()
        self._sent_total = 0
        self._sent: dict[Stream, int] = dict.fromkeys(Stream, 0)
        self._day = -1
        self._sent_today: dict[Stream, int] = dict.fromkeys(Stream, 0)
        self._aging: dict[Stream, _AgingWindow] = {}

    # ------------------------------------------------------------------ bookkeeping

    def record_sent(self, stream: Stream, nbytes: int, now: float) -> None:
        """Account bytes that went out for ``stream`` (for budgets and aging shares)."""
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        self._roll_day(now)
        self._sent_total += nbytes
        self._sent[stream] += nbytes
        self._sent_today[stream] += nbytes

    def restore_sent_today(self, sent_today: Mapping[Stream, int], now: float) -> None:
        """Reload today's spending after a restart (so a restart does not reset budgets)."""
        self._roll_day(now)
        for stream, nbytes in sent_today.items():
            self._sent_today[stream] = max(self._sent_today[stream], nbytes)

    def sent_today(self, now: float) -> dict[Stream, int]:
        self._roll_day(now)
        return dict(self._sent_today)

    def budget_left(self, stream: Stream, now: float) -> int | None:
        """Bytes ``stream`` may still send today (None: unlimited)."""
        if stream is Stream.CRITICAL:
            return None
        budget = self.policy.daily_budget_bytes.get(stream)
        if budget is None:
            return None
        self._roll_day(now)
        return max(0, budget - self._sent_today[stream])

    def _roll_day(self, now: float) -> None:
        day = utc_day(now)
        if day != self._day:
            self._day = day
            self._sent_today = dict.fromkeys(Stream, 0)

    # ------------------------------------------------------------------ the decision

    def decide(
        self,
        backlog: Mapping[Stream, Backlog],
        now: float,
        *,
        link_up: bool = True,
        paused: bool = False,
        blocked: frozenset[Stream] = frozenset(),
    ) -> Decision | Idle:
        """The next stream to send from.  ``blocked`` streams (stalled) are passed over."""
        if paused:
            return Idle(IdleReason.PAUSED, math.inf)
        if not link_up:
            return Idle(IdleReason.OFFLINE, math.inf)
        self._update_aging(backlog)
        waiting = [s for s in Stream if not backlog.get(s, Backlog()).empty and s not in blocked]
        if not waiting:
            return Idle(IdleReason.NOTHING_PENDING, math.inf)
        sendable = [s for s in waiting if self.budget_left(s, now) != 0]
        if not sendable:
            return Idle(IdleReason.BUDGET_EXHAUSTED, self._until_next_day(now))
        if Stream.CRITICAL in sendable:
            return Decision(Stream.CRITICAL, None)
        top = sendable[0]
        for stream in sendable[1:]:  # the highest-priority starved class first
            if self._starved(stream):
                return Decision(stream, self.budget_left(stream, now), aged=True)
        return Decision(top, self.budget_left(top, now))

    def _update_aging(self, backlog: Mapping[Stream, Backlog]) -> None:
        for stream in Stream:
            item = backlog.get(stream, Backlog())
            aged = not item.empty and item.oldest_age_s >= self.policy.aging_after_s
            if aged and stream not in self._aging:
                self._aging[stream] = _AgingWindow(self._sent_total, self._sent[stream])
            elif not aged:
                self._aging.pop(stream, None)

    def _starved(self, stream: Stream) -> bool:
        window = self._aging.get(stream)
        if window is None:
            return False
        total = self._sent_total - window.total_at_start
        own = self._sent[stream] - window.own_at_start
        if total == 0:
            return True  # aged and nothing sent since: give it its turn first
        return own < self.policy.aging_share * total

    def _until_next_day(self, now: float) -> float:
        return (utc_day(now) + 1) * SECONDS_PER_DAY - now


class TokenBucket:
    """A pure token bucket for the global bandwidth cap.

    The cap is set in bits per second (as configured and shown); credit is
    counted in bytes, since that is what a writer sends.

    ``reserve(n, now)`` takes ``n`` bytes of credit (it may go into debt) and
    returns how long the caller must wait before writing them; with no cap it
    always returns 0.  ``burst_s`` seconds of credit may accumulate while idle.
    """

    def __init__(self, rate_bps: float | None, *, burst_s: float = 0.25) -> None:
        if burst_s <= 0:
            raise ValueError("burst_s must be positive")
        self._burst_s = burst_s
        self._rate_Bps: float | None = None
        self._tokens = 0.0
        self._updated: float | None = None
        self.set_rate(rate_bps)

    @property
    def rate_bps(self) -> float | None:
        """The cap in bits per second (None: uncapped)."""
        return None if self._rate_Bps is None else self._rate_Bps * 8

    def set_rate(self, rate_bps: float | None) -> None:
        if rate_bps is not None and not (math.isfinite(rate_bps) and rate_bps >= 1):
            raise ValueError("rate_bps must be a finite number >= 1 (bits per second) or None")
        self._rate_Bps = None if rate_bps is None else rate_bps / 8
        self._tokens = min(self._tokens, self._capacity())

    def _capacity(self) -> float:
        return 0.0 if self._rate_Bps is None else self._rate_Bps * self._burst_s

    def reserve(self, nbytes: int, now: float) -> float:
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        if self._rate_Bps is None:
            self._updated = now
            return 0.0
        if self._updated is None:
            self._tokens = self._capacity()
        else:
            elapsed = max(0.0, now - self._updated)
            self._tokens = min(self._capacity(), self._tokens + elapsed * self._rate_Bps)
        self._updated = now
        self._tokens -= nbytes
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate_Bps
