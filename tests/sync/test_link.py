"""Link monitor (pure): state transitions, full-jitter backoff bounds, bandwidth estimate."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.link import FLAKY_FOR_S, PERMANENT_WAIT_S, RETRYABLE_WAIT_S, LinkMonitor, LinkState
from sync.settings import LinkSettings


def test_states_follow_outcomes() -> None:
    link = LinkMonitor(offline_after_failures=3, rng=random.Random(1))
    assert link.state is LinkState.OFFLINE and not link.usable
    link.succeeded(10.0)
    assert link.state is LinkState.ONLINE and link.snapshot().online_since == 10.0
    link.failed(11.0, "reset")
    assert link.state is LinkState.DEGRADED and link.usable
    link.failed(12.0, "reset")
    link.failed(13.0, "refused")
    assert link.state is LinkState.OFFLINE
    snap = link.snapshot()
    assert snap.consecutive_failures == 3 and snap.last_error == "refused"
    assert snap.online_since is None
    link.succeeded(20.0)
    assert link.state is LinkState.ONLINE and link.backoff_s() == 0.0
    assert link.snapshot().failures_total == 3


@given(failures=st.integers(1, 200), seed=st.integers(0, 2**32))
def test_backoff_is_full_jitter_within_bounds(failures: int, seed: int) -> None:
    settings = LinkSettings(backoff_initial_s=0.5, backoff_max_s=60)
    link = LinkMonitor(settings, rng=random.Random(seed))
    for i in range(failures):
        link.failed(float(i), "x")
    ceiling = min(60.0, 0.5 * 2 ** (failures - 1))
    delays = [link.backoff_s() for _ in range(20)]
    assert all(0 <= d <= ceiling for d in delays)


def test_backoff_is_spread_out() -> None:
    link = LinkMonitor(LinkSettings(backoff_initial_s=1, backoff_max_s=8), rng=random.Random(7))
    for i in range(10):
        link.failed(float(i), "x")
    delays = [link.backoff_s() for _ in range(2000)]
    assert max(delays) <= 8
    assert 3.5 < sum(delays) / len(delays) < 4.5  # uniform(0, 8) has mean 4


def test_bandwidth_estimate_smooths_large_transfers_only() -> None:
    link = LinkMonitor(smoothing=0.5)
    link.succeeded(0.0, nbytes=100, seconds=1)  # too small to measure
    assert link.bandwidth_bps is None
    link.succeeded(1.0, nbytes=250_000, seconds=1)
    assert link.bandwidth_bps == pytest.approx(2_000_000)
    link.observe_throughput(125_000, 1)
    assert link.bandwidth_bps == pytest.approx(1_500_000)
    link.observe_rtt(0.2)
    link.observe_rtt(0.1)
    assert link.snapshot().rtt_ms == pytest.approx(150)


def test_flapping_link_alternates_without_getting_stuck() -> None:
    link = LinkMonitor(offline_after_failures=2, rng=random.Random(3))
    for cycle in range(50):
        link.failed(cycle, "cut")
        link.failed(cycle + 0.1, "cut")
        assert link.state is LinkState.OFFLINE
        assert link.backoff_s() <= link.settings.backoff_initial_s * 2
        link.succeeded(cycle + 0.5)
        assert link.state is LinkState.ONLINE


def test_a_failure_that_will_not_pass_waits_at_least_the_permanent_floor() -> None:
    link = LinkMonitor(
        LinkSettings(backoff_initial_s=0.05, backoff_max_s=0.5), rng=random.Random(3)
    )
    assert link.retry_after_s(retryable=True) == RETRYABLE_WAIT_S  # no failure yet: no backoff
    assert link.retry_after_s(retryable=False) == PERMANENT_WAIT_S
    for _ in range(20):
        link.failed(0.0, "refused")
        assert RETRYABLE_WAIT_S <= link.retry_after_s(retryable=True) <= 0.5
        assert link.retry_after_s(retryable=False) == PERMANENT_WAIT_S  # above any backoff here
    slow = LinkMonitor(LinkSettings(backoff_initial_s=5, backoff_max_s=60), rng=random.Random(3))
    for _ in range(5):
        slow.failed(0.0, "refused")
    waits = [slow.retry_after_s(retryable=False) for _ in range(50)]
    assert min(waits) >= PERMANENT_WAIT_S and max(waits) > PERMANENT_WAIT_S  # the backoff, above


def test_a_short_outage_is_probed_about_every_probe_interval_jittered() -> None:
    settings = LinkSettings(backoff_initial_s=5, backoff_max_s=60, probe_interval_s=0.5)
    link = LinkMonitor(settings, rng=random.Random(11))
    link.failed(100.0, "reset", unreachable=True)
    waits = [link.probe_wait_s(101.0) for _ in range(2000)]
    assert all(0.25 <= w <= 0.75 for w in waits)  # not the 0-5 s backoff
    assert 0.48 < sum(waits) / len(waits) < 0.52 and max(waits) - min(waits) > 0.4  # spread


def test_probes_slow_down_with_the_outage_up_to_the_backoff_ceiling() -> None:
    settings = LinkSettings(backoff_initial_s=0.5, backoff_max_s=60, probe_interval_s=0.5)
    link = LinkMonitor(settings, rng=random.Random(12))
    link.failed(0.0, "refused", unreachable=True)
    for _ in range(30):
        link.failed(1.0, "refused", unreachable=True)
    after_100_s = [link.probe_wait_s(100.0) for _ in range(500)]  # base: 0.05 x 100 s
    assert min(after_100_s) >= 2.5 and max(after_100_s) <= 7.5
    after_an_hour = [link.probe_wait_s(3600.0) for _ in range(500)]  # base: backoff_max_s
    assert min(after_an_hour) >= 30.0 and max(after_an_hour) <= 90.0
    link.succeeded(3601.0)
    link.failed(4000.0, "reset", unreachable=True)  # a new outage starts short again
    assert link.probe_wait_s(4000.5) <= 0.75


def test_a_link_cut_recently_is_flaky_an_answer_of_trouble_is_not() -> None:
    link = LinkMonitor(rng=random.Random(1))
    assert not link.flaky(0.0)
    link.failed(10.0, "HTTP 503")  # the service answered: the link itself is fine
    assert not link.flaky(10.0)
    link.succeeded(11.0)
    link.failed(20.0, "reset", unreachable=True)
    link.succeeded(21.0)
    assert link.flaky(21.0) and link.flaky(20.0 + FLAKY_FOR_S - 1)
    assert not link.flaky(20.0 + FLAKY_FOR_S)
