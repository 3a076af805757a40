"""The pure rollout state machine: canary -> stages -> complete, operator actions, auto-abort."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_ingest.models.rollout import (
    Rollout,
    RolloutPhase,
    RolloutStateError,
    Tally,
    device_bucket,
)
from sync.protocol.releases import RolloutPlan

PLAN = RolloutPlan(
    canary_sites=["wh-nyc-01"], stages=[10, 50, 100], max_failure_pct=2.0, min_devices=3, bake_s=60
)
T0 = 1_000_000.0


def started(plan: RolloutPlan = PLAN) -> Rollout:
    rollout, transition = Rollout.start("gate-ocr", "v2", 2, plan, T0, "alice")
    assert transition.action == "rollout.start"
    assert transition.actor == "alice"
    return rollout


def good(eligible: int = 5) -> Tally:
    return Tally(eligible=eligible, reporting=eligible, committed=eligible, failed=0)


def test_canary_then_each_stage_then_complete_after_bake() -> None:
    rollout = started()
    assert rollout.phase is RolloutPhase.CANARY
    assert rollout.covers("any-device", "wh-nyc-01")
    assert not any(rollout.covers(f"d{i}", "yard-b") for i in range(200))

    same, transition = rollout.advance(good(), T0 + 59)  # bake not over
    assert transition is None and same == rollout

    percents = []
    now = T0
    while not rollout.terminal:
        now += 60
        rollout, transition = rollout.advance(good(), now)
        assert transition is not None
        percents.append(rollout.percent)
    assert percents == [10, 50, 100]
    assert rollout.phase is RolloutPhase.COMPLETE
    assert transition.action == "rollout.complete"
    assert all(rollout.covers(f"d{i}", "yard-b") for i in range(200))


def test_a_stage_waits_for_enough_committed_devices() -> None:
    rollout = started()
    waiting = Tally(eligible=5, reporting=2, committed=2, failed=0)
    same, transition = rollout.advance(waiting, T0 + 3600)
    assert transition is None and same.phase is RolloutPhase.CANARY
    # a canary site with fewer devices than min_devices needs them all
    small = Tally(eligible=2, reporting=2, committed=2, failed=0)
    moved, transition = rollout.advance(small, T0 + 3600)
    assert transition is not None and moved.phase is RolloutPhase.STAGED


def test_failures_above_the_threshold_abort_once_min_devices_reported() -> None:
    rollout = started()
    two_failed = Tally(eligible=3, reporting=2, committed=0, failed=2)
    same, transition = rollout.advance(two_failed, T0 + 1)
    assert transition is None and same.phase is RolloutPhase.CANARY  # 2 < min_devices
    three = Tally(eligible=3, reporting=3, committed=1, failed=2)
    aborted, transition = rollout.advance(three, T0 + 1)
    assert aborted.phase is RolloutPhase.ABORTED
    assert transition is not None
    assert transition.action == "rollout.abort"
    assert transition.actor == "rollout"
    assert "2 of 3" in aborted.reason
    assert not aborted.covers("d1", "wh-nyc-01")
    # aborted is final
    assert aborted.advance(good(), T0 + 10_000) == (aborted, None)
    with pytest.raises(RolloutStateError):
        aborted.operator("resume", T0, "alice")


def test_a_paused_rollout_aborts_on_failures_but_does_not_advance() -> None:
    paused, transition = started().operator("pause", T0 + 1, "alice")
    assert paused.paused and transition.action == "rollout.pause"
    same, none = paused.advance(good(), T0 + 10_000)
    assert none is None and same.phase is RolloutPhase.CANARY
    with pytest.raises(RolloutStateError, match="already paused"):
        paused.operator("pause", T0 + 2, "alice")
    resumed, transition = paused.operator("resume", T0 + 100, "bob")
    assert not resumed.paused and transition.actor == "bob"
    same, none = resumed.advance(good(), T0 + 150)  # bake restarts on resume
    assert none is None
    moved, _ = resumed.advance(good(), T0 + 160)
    assert moved.phase is RolloutPhase.STAGED
    bad = Tally(eligible=5, reporting=5, committed=0, failed=5)
    aborted, _ = paused.advance(bad, T0 + 2)
    assert aborted.phase is RolloutPhase.ABORTED


def test_operator_abort_names_the_operator_and_reason() -> None:
    aborted, transition = started().operator("abort", T0 + 5, "alice", "bad OCR on lane 3")
    assert aborted.phase is RolloutPhase.ABORTED
    assert aborted.reason == "bad OCR on lane 3"
    assert transition.actor == "alice"
    assert transition.detail["reason"] == "bad OCR on lane 3"


def test_no_canary_sites_starts_at_the_first_stage() -> None:
    plan = RolloutPlan(canary_sites=[], stages=[25, 100], min_devices=1, bake_s=0)
    rollout = started(plan)
    assert rollout.phase is RolloutPhase.STAGED and rollout.percent == 25
    covered = sum(rollout.covers(f"dev-{i}", "yard-b") for i in range(2000))
    assert 400 < covered < 600  # about a quarter


@settings(max_examples=200, deadline=None)
@given(device=st.text(min_size=1, max_size=20), name=st.text(min_size=1, max_size=20))
def test_bucket_is_stable_and_in_range(device: str, name: str) -> None:
    bucket = device_bucket(name, device)
    assert 0 <= bucket < 100
    assert device_bucket(name, device) == bucket


events = st.one_of(
    st.tuples(
        st.just("tally"),
        st.integers(0, 20),
        st.integers(0, 20),
        st.integers(0, 20),
        st.integers(0, 200),
    ),
    st.tuples(st.sampled_from(["pause", "resume", "abort"]), st.integers(0, 200)),
)


@settings(max_examples=300, deadline=None)
@given(
    plan=st.builds(
        RolloutPlan,
        canary_sites=st.lists(st.sampled_from(["c1", "c2"]), max_size=2, unique=True),
        stages=st.sampled_from([[100], [10, 100], [5, 25, 50, 100]]),
        max_failure_pct=st.floats(0, 100),
        min_devices=st.integers(1, 10),
        bake_s=st.integers(0, 100),
    ),
    steps=st.lists(events, max_size=40),
)
def test_any_event_sequence_only_moves_forward(plan: RolloutPlan, steps: list[tuple]) -> None:  # type: ignore[type-arg]
    """Phases only move forward, a covered device stays covered until an abort,
    the threshold always aborts, and terminal states never change."""
    rollout, now = started(plan), T0
    order = {RolloutPhase.CANARY: 0, RolloutPhase.STAGED: 1, RolloutPhase.COMPLETE: 2}
    devices = [(f"d{i}", "c1" if i % 5 == 0 else "yard") for i in range(60)]
    for step in steps:
        before = rollout
        covered = {d for d, s in devices if before.covers(d, s)}
        if step[0] == "tally":
            _, reporting_extra, committed, failed, dt = step
            reporting = committed + failed + reporting_extra
            tally = Tally(
                eligible=len(covered), reporting=reporting, committed=committed, failed=failed
            )
            now += dt
            rollout, transition = before.advance(tally, now)
            crossed = reporting >= plan.min_devices and tally.failure_pct > plan.max_failure_pct
            if not before.terminal and crossed:
                assert rollout.phase is RolloutPhase.ABORTED
        else:
            action, dt = step
            now += dt
            try:
                rollout, transition = before.operator(action, now, "op")
            except RolloutStateError:
                assert before.terminal or (action == "pause") == before.paused
                continue
        if before.terminal:
            assert rollout == before
            continue
        if rollout.phase is RolloutPhase.ABORTED:
            assert not any(rollout.covers(d, s) for d, s in devices)
            continue
        assert (order[rollout.phase], rollout.stage_index) >= (
            order[before.phase],
            before.stage_index,
        )
        assert covered <= {d for d, s in devices if rollout.covers(d, s)}
        assert rollout.percent >= before.percent
