"""The pure scheduler and token bucket: examples plus hypothesis properties (no sockets)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.protocol import Stream
from sync.scheduler import (
    Backlog,
    Decision,
    Idle,
    IdleReason,
    Scheduler,
    SchedulerPolicy,
    TokenBucket,
    utc_day,
)

NOW = 1_800_000_000.0
backlogs = st.dictionaries(
    st.sampled_from(list(Stream)),
    st.builds(
        Backlog,
        records=st.integers(0, 1000),
        bytes=st.integers(0, 10**9),
        oldest_age_s=st.floats(0, 10_000),
    ),
)


def full(age: float = 0.0) -> dict[Stream, Backlog]:
    return {s: Backlog(100, 10**9, age) for s in Stream}


def test_offline_and_paused_send_nothing() -> None:
    scheduler = Scheduler()
    assert scheduler.decide(full(), NOW, link_up=False) == Idle(IdleReason.OFFLINE, math.inf)
    assert scheduler.decide(full(), NOW, paused=True) == Idle(IdleReason.PAUSED, math.inf)
    assert scheduler.decide({}, NOW) == Idle(IdleReason.NOTHING_PENDING, math.inf)


def test_strict_priority_without_aging() -> None:
    scheduler = Scheduler()
    backlog = full()
    order = []
    for stream in Stream:
        decision = scheduler.decide(backlog, NOW)
        assert isinstance(decision, Decision)
        order.append(decision.stream)
        backlog[stream] = Backlog()
    assert order == list(Stream)


def test_blocked_stream_is_passed_over() -> None:
    decision = Scheduler().decide(full(), NOW, blocked=frozenset({Stream.CRITICAL}))
    assert decision == Decision(Stream.EVENTS, None)


def test_budget_exhausted_waits_for_next_day() -> None:
    policy = SchedulerPolicy(daily_budget_bytes={Stream.RAW_SAMPLED: 1000})
    scheduler = Scheduler(policy)
    backlog = {Stream.RAW_SAMPLED: Backlog(5, 5000)}
    assert scheduler.decide(backlog, NOW) == Decision(Stream.RAW_SAMPLED, 1000)
    scheduler.record_sent(Stream.RAW_SAMPLED, 600, NOW)
    assert scheduler.decide(backlog, NOW) == Decision(Stream.RAW_SAMPLED, 400)
    scheduler.record_sent(Stream.RAW_SAMPLED, 400, NOW)
    idle = scheduler.decide(backlog, NOW)
    assert isinstance(idle, Idle) and idle.reason is IdleReason.BUDGET_EXHAUSTED
    assert 0 < idle.wait_s <= 86_400
    tomorrow = NOW + idle.wait_s
    assert utc_day(tomorrow) == utc_day(NOW) + 1
    assert scheduler.decide(backlog, tomorrow) == Decision(Stream.RAW_SAMPLED, 1000)


def test_critical_ignores_budgets_and_aging() -> None:
    policy = SchedulerPolicy(aging_after_s=1, daily_budget_bytes={Stream.CRITICAL: 0})
    decision = Scheduler(policy).decide(full(age=100), NOW)
    assert decision == Decision(Stream.CRITICAL, None)


def test_restore_sent_today_keeps_budget_across_restart() -> None:
    policy = SchedulerPolicy(daily_budget_bytes={Stream.TELEMETRY: 100})
    scheduler = Scheduler(policy)
    scheduler.restore_sent_today({Stream.TELEMETRY: 100}, NOW)
    idle = scheduler.decide({Stream.TELEMETRY: Backlog(1, 10)}, NOW)
    assert isinstance(idle, Idle) and idle.reason is IdleReason.BUDGET_EXHAUSTED


def test_aged_class_gets_its_share() -> None:
    scheduler = Scheduler(SchedulerPolicy(aging_after_s=60, aging_share=0.25))
    backlog = full(age=0)
    backlog[Stream.CRITICAL] = Backlog()
    backlog[Stream.RAW_SAMPLED] = Backlog(10, 10**9, 120)  # aged
    counts = dict.fromkeys(Stream, 0)
    for _ in range(400):
        decision = scheduler.decide(backlog, NOW)
        assert isinstance(decision, Decision)
        counts[decision.stream] += 1000
        scheduler.record_sent(decision.stream, 1000, NOW)
    share = counts[Stream.RAW_SAMPLED] / sum(counts.values())
    assert 0.24 <= share <= 0.26
    assert counts[Stream.EVENTS] == sum(counts.values()) - counts[Stream.RAW_SAMPLED]


@given(backlog=backlogs, link_up=st.booleans(), paused=st.booleans())
def test_decision_is_highest_nonempty_class_when_nothing_aged(
    backlog: dict[Stream, Backlog], link_up: bool, paused: bool
) -> None:
    young = {s: Backlog(b.records, b.bytes, 0.0) for s, b in backlog.items()}
    decision = Scheduler().decide(young, NOW, link_up=link_up, paused=paused)
    waiting = [s for s in Stream if not young.get(s, Backlog()).empty]
    if paused or not link_up or not waiting:
        assert isinstance(decision, Idle)
    else:
        assert decision == Decision(waiting[0], None)


@settings(max_examples=60)
@given(
    budgets=st.dictionaries(st.sampled_from(list(Stream)), st.integers(0, 50_000)),
    sizes=st.lists(st.integers(1, 7000), min_size=1, max_size=200),
    aging_after=st.floats(1, 100),
    ages=st.lists(st.floats(0, 200), min_size=5, max_size=5),
)
def test_budgets_never_exceeded(
    budgets: dict[Stream, int], sizes: list[int], aging_after: float, ages: list[float]
) -> None:
    scheduler = Scheduler(SchedulerPolicy(aging_after_s=aging_after, daily_budget_bytes=budgets))
    backlog = {s: Backlog(1, 10**9, age) for s, age in zip(Stream, ages, strict=True)}
    for size in sizes:
        decision = scheduler.decide(backlog, NOW)
        if isinstance(decision, Idle):
            assert decision.reason is IdleReason.BUDGET_EXHAUSTED
            break
        sent = size if decision.max_bytes is None else min(size, decision.max_bytes)
        assert sent > 0
        scheduler.record_sent(decision.stream, sent, NOW)
    for stream, spent in scheduler.sent_today(NOW).items():
        if stream is not Stream.CRITICAL and stream in budgets:
            assert spent <= budgets[stream]


@settings(max_examples=40)
@given(
    share=st.floats(0.05, 0.5),
    sizes=st.lists(st.integers(100, 5000), min_size=300, max_size=300),
    aged=st.sets(st.sampled_from(list(Stream)[1:]), min_size=1),
)
def test_no_aged_class_starves(share: float, sizes: list[int], aged: set[Stream]) -> None:
    """Every aged class gets at least its share (minus one message) of the bytes sent."""
    scheduler = Scheduler(SchedulerPolicy(aging_after_s=10, aging_share=share))
    backlog = {
        s: Backlog(1, 10**9, 20.0 if s in aged else 0.0) for s in Stream if s is not Stream.CRITICAL
    }
    sent = dict.fromkeys(Stream, 0)
    for size in sizes:
        decision = scheduler.decide(backlog, NOW)
        assert isinstance(decision, Decision)
        sent[decision.stream] += size
        scheduler.record_sent(decision.stream, size, NOW)
    total = sum(sent.values())
    if share * len(aged) <= 1:
        for stream in aged:
            assert sent[stream] >= share * total - 5000 * len(aged)


def test_token_bucket_uncapped_never_waits() -> None:
    bucket = TokenBucket(None)
    assert bucket.reserve(10**9, NOW) == 0.0
    assert bucket.rate_bps is None


@given(
    rate=st.floats(1000, 1e8),
    pieces=st.lists(st.integers(0, 100_000), min_size=1, max_size=100),
    gaps=st.lists(st.floats(0, 0.5), min_size=100, max_size=100),
)
def test_token_bucket_never_exceeds_rate_plus_burst(
    rate: float, pieces: list[int], gaps: list[float]
) -> None:
    burst_s = 0.25
    bucket = TokenBucket(rate, burst_s=burst_s)
    now = start = NOW
    released = 0
    for piece, gap in zip(pieces, gaps, strict=False):
        now += gap
        wait = bucket.reserve(piece, now)
        assert wait >= 0
        now += wait  # the caller sleeps, then writes
        released += piece
        budget = rate / 8 * (now - start + burst_s)
        assert released <= budget * (1 + 1e-9) + 1


def test_token_bucket_rate_change() -> None:
    bucket = TokenBucket(8000)  # 1000 bytes/s
    assert bucket.reserve(250, NOW) == 0.0  # the initial burst
    assert bucket.reserve(1000, NOW) == pytest.approx(1.0)
    bucket.set_rate(None)
    assert bucket.reserve(10**6, NOW) == 0.0
    for bad in (0, 0.5, 5e-324, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="finite number >= 1"):
            bucket.set_rate(bad)
