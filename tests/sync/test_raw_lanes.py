"""plan_lanes: how many raw uploads go at once, and their chunk size (pure)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from sync.raw_lanes import MAX_LANES, SERVER_S, STAGGER_SHARE, LanePlan, plan_lanes

MIN, MAX = 64 << 10, 8 << 20


def plan(rate_bps: float, rtt_s: float, blob: int = 2 << 20, target_s: float = 4.0) -> LanePlan:
    return plan_lanes(
        rate_bps / 8, rtt_s, target_s=target_s, blob_bytes=blob, min_chunk=MIN, max_chunk=MAX
    )


def test_unknown_rate_starts_with_two_small_uploads() -> None:
    assert plan_lanes(None, 0.1, target_s=4, blob_bytes=1 << 20, min_chunk=MIN, max_chunk=MAX) == (
        LanePlan(2, MIN)
    )
    assert plan_lanes(1e6, None, target_s=4, blob_bytes=1 << 20, min_chunk=MIN, max_chunk=MAX) == (
        LanePlan(2, MIN)
    )


def test_the_benchmark_links_are_kept_full() -> None:
    """While one upload waits two round trips, the others' chunks fill the link."""
    for rate_bps, rtt_s in ((2e6, 0.15), (20e6, 0.6)):
        got = plan(rate_bps, rtt_s)
        idle_bytes = rate_bps / 8 * (2 * rtt_s + SERVER_S)
        request = min(got.chunk_bytes, 2 << 20)  # a chunk is never more than its blob
        assert (got.lanes - 1) * request >= idle_bytes
        assert got.lanes * request <= rate_bps / 8 * 4.0  # an event waits <= target


def test_new_uploads_may_start_faster_than_the_link_carries_one_request() -> None:
    """Starts a whole request apart would let uploads start only at the link's pace, so
    one that starts late could never be caught up; they go a share of it apart (and
    never more than two round trips)."""
    for rate_bps, rtt_s in ((2e6, 0.15), (20e6, 0.6)):
        got = plan(rate_bps, rtt_s)
        wire_s = min(got.chunk_bytes, 2 << 20) / (rate_bps / 8)  # one request on the wire
        assert got.stagger_s == min(STAGGER_SHARE * wire_s, 2 * rtt_s)
    satellite = plan(20e6, 0.6)
    assert satellite.stagger_s < (2 << 20) / (20e6 / 8) < 2 * 0.6  # not the round trips' bound
    assert STAGGER_SHARE < 1


def test_a_longer_round_trip_asks_for_bigger_chunks_or_more_lanes() -> None:
    near, far = plan(20e6, 0.05), plan(20e6, 0.6)
    assert far.chunk_bytes * far.lanes > near.chunk_bytes * near.lanes


@given(
    rate=st.floats(1e3, 1e9),
    rtt=st.floats(0, 2),
    target=st.floats(0.1, 30),
    blob=st.integers(1, 1 << 30),
    min_chunk=st.integers(1024, 1 << 20),
    extra=st.integers(0, 16 << 20),
)
def test_plans_stay_in_their_bounds(
    rate: float, rtt: float, target: float, blob: int, min_chunk: int, extra: int
) -> None:
    max_chunk = min_chunk + extra
    got = plan_lanes(
        rate, rtt, target_s=target, blob_bytes=blob, min_chunk=min_chunk, max_chunk=max_chunk
    )
    assert 2 <= got.lanes <= MAX_LANES
    assert min_chunk <= got.chunk_bytes <= max_chunk
    request = min(got.chunk_bytes, blob)
    if got.lanes > 2:  # more than two only while their chunks fit the window
        assert got.lanes * request <= rate * target
    assert 0 < got.stagger_s <= 2 * rtt or rtt == 0  # starts apart, by at most two round trips
    # never more lanes than filling the idle time asks for
    idle = rate * (2 * rtt + SERVER_S)
    assert got.lanes <= max(2, 1 + math.ceil(1.5 * idle / request))


def test_the_last_uploads_of_a_backlog_send_bigger_chunks_within_half_the_window() -> None:
    """With no blob left to start, the one or two uploads left send bigger chunks, so
    their answers' round trips do not idle the link; together they stay within half
    the window (what an event may wait behind)."""
    rate_Bps, window = 2e6 / 8, 2e6 / 8 * 4.0
    full = plan(2e6, 0.15)
    assert full.lanes >= 3
    for left in (1, 2):
        last = plan_lanes(
            rate_Bps,
            0.15,
            target_s=4.0,
            blob_bytes=2 << 20,
            min_chunk=MIN,
            max_chunk=MAX,
            uploads_left=left,
        )
        assert last.chunk_bytes > full.chunk_bytes and last.lanes == full.lanes
        assert left * last.chunk_bytes <= window / 2
        one = last.chunk_bytes / (last.chunk_bytes + rate_Bps * (0.15 + SERVER_S))
        assert min(1.0, left * one) >= 0.9  # the link's busy share, answers' waits included
    as_many = plan_lanes(
        rate_Bps,
        0.15,
        target_s=4.0,
        blob_bytes=2 << 20,
        min_chunk=MIN,
        max_chunk=MAX,
        uploads_left=full.lanes,
    )
    assert as_many == full  # enough uploads left to fill the lanes: the usual chunks
