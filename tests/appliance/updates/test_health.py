"""The health watch's judge (pure) and the watch mark in the slot state."""

from __future__ import annotations

import pytest

from appliance.updates.health import HealthWindow
from appliance.updates.settings import UpdateSettings
from appliance.updates.slot_state import SlotStatus, TaskSlots

SETTINGS = UpdateSettings(
    health_block_frames=4, health_max_error_rate=0.25, health_p99_vs_sla=1.0, health_bad_blocks=1
)


def _window() -> HealthWindow:
    return HealthWindow(SETTINGS, sla_ms=100.0, started_at=0.0)


def test_a_healthy_block_is_counted_and_a_new_one_begins():
    window = _window()
    assert [window.add(ms) for ms in (10.0, 20.0, 30.0, 99.0)] == [None] * 4
    assert window.blocks == 1 and window.block_ms == [] and window.frames == 4
    assert window.add(10.0) is None
    assert window.evidence(now=5.0)["block_frames"] == 1


def test_one_error_in_a_block_is_within_the_rate_two_are_not():
    window = _window()
    assert [window.add(x) for x in (None, 10.0, 10.0, 10.0)] == [None] * 4
    reasons = [window.add(x) for x in (None, 10.0, None, 10.0)]
    assert reasons[:3] == [None] * 3
    assert reasons[3] is not None and "error rate 0.500 over 0.25" in reasons[3]
    assert window.errors == 3


def test_the_tail_decides_not_the_mean():
    window = _window()
    reasons = [window.add(ms) for ms in (1.0, 1.0, 1.0, 101.0)]
    assert reasons[3] == "health regression over 4 frames: p99 101.0 ms over 100 ms"


def test_a_block_of_errors_only_is_a_regression_without_a_latency():
    window = _window()
    reason = [window.add(None) for _ in range(4)][-1]
    assert reason is not None and "error rate 1.000" in reason and "p99" not in reason


def test_one_unhealthy_block_is_a_spike_the_second_in_a_row_a_regression():
    window = HealthWindow(
        SETTINGS.model_copy(update={"health_bad_blocks": 2}), sla_ms=100.0, started_at=0.0
    )
    spike, healthy = (1.0, 1.0, 1.0, 500.0), (1.0, 1.0, 1.0, 1.0)
    assert [window.add(ms) for ms in spike + healthy + spike] == [None] * 12  # not in a row
    assert window.unhealthy_in_row == 1 and window.blocks == 1
    reasons = [window.add(ms) for ms in spike]
    assert reasons[:3] == [None] * 3
    assert reasons[3] == (
        "health regression over 4 frames: p99 500.0 ms over 100 ms (2 blocks in a row)"
    )


@pytest.mark.parametrize(("now", "over"), [(3599.0, False), (3600.0, True)])
def test_the_watch_lasts_its_configured_time(now: float, over: bool):
    assert _window().over(now) is over
    assert HealthWindow(SETTINGS, 100.0, started_at=0.0).evidence(now)["remaining_s"] == round(
        max(0.0, 3600.0 - now)
    )


def _committed(watch: bool) -> TaskSlots:
    slots, slot = TaskSlots().begin_staging(name="gate-ocr", version="v2", counter=2, keyid="k")
    slots = slots.mark(slot, SlotStatus.STAGED).mark(slot, SlotStatus.VALIDATED)
    return slots.switch(slot).commit(watch=watch)


def test_commit_marks_the_watch_and_rollback_or_a_new_switch_clears_it():
    slots = _committed(watch=True)
    assert slots.watched() == "gate-ocr@2"
    assert _committed(watch=False).watched() is None
    assert slots.end_watch().watched() is None
    rolled = slots.rollback("health regression")
    assert rolled.watching is None and rolled.active is None
    nxt, slot = slots.begin_staging(name="gate-ocr", version="v3", counter=3, keyid="k")
    nxt = nxt.mark(slot, SlotStatus.STAGED).mark(slot, SlotStatus.VALIDATED).switch(slot)
    assert nxt.watching is None and nxt.watched() is None


def test_a_mark_for_another_release_than_the_serving_one_is_not_a_watch():
    slots = _committed(watch=True).model_copy(update={"watching": "gate-ocr@1"})
    assert slots.watched() is None
