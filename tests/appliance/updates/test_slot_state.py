"""The A/B slot state machine, without disk or models."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.updates.slot_state import SlotStatus, TaskSlots, UpdateState


def _staged(slots: TaskSlots, counter: int) -> tuple[TaskSlots, str]:
    slots, slot = slots.begin_staging(name="ocr", version=f"v{counter}", counter=counter, keyid="k")
    slots = slots.mark(slot, SlotStatus.STAGED).mark(slot, SlotStatus.VALIDATED)
    return slots, slot


def test_install_switch_commit_then_next_release_uses_the_other_slot():
    slots, slot = _staged(TaskSlots(), 2)
    assert slot == "a" and slots.active is None and slots.active_counter("ocr") is None
    slots = slots.switch("a")
    assert slots.on_trial() and slots.previous is None
    slots = slots.commit()
    assert slots.slots["a"].status is SlotStatus.ACTIVE and slots.active_counter("ocr") == 2
    assert slots.active_counter("faces") is None
    slots, slot = _staged(slots, 3)
    assert slot == "b"
    slots = slots.switch("b").commit()
    assert (slots.active, slots.previous) == ("b", "a")
    assert slots.slots["a"].status is SlotStatus.FALLBACK


def test_rollback_goes_one_step_back_then_to_the_pinned_models():
    slots = _staged(TaskSlots(), 2)[0].switch("a").commit()
    slots = _staged(slots, 3)[0].switch("b")
    slots = slots.rollback("shadow: p99 over the SLA")
    assert (slots.active, slots.previous) == ("a", None)
    assert slots.slots["b"].status is SlotStatus.FAILED
    assert slots.slots["a"].status is SlotStatus.ACTIVE
    assert slots.rejected == ["ocr@3"]
    slots = slots.rollback("technician")
    assert slots.active is None and slots.rejected == ["ocr@3", "ocr@2"]
    with pytest.raises(ValueError, match="pinned"):
        slots.rollback("again")


def test_staging_over_the_fallback_drops_it():
    slots = _staged(TaskSlots(), 2)[0].switch("a").commit()
    slots = _staged(slots, 3)[0].switch("b").commit()  # a is the fallback
    slots, slot = slots.begin_staging(name="ocr", version="v4", counter=4, keyid="k")
    assert slot == "a" and slots.previous is None


def test_steps_out_of_order_are_refused():
    slots, slot = TaskSlots().begin_staging(name="ocr", version="v", counter=1, keyid="k")
    with pytest.raises(ValueError):
        slots.mark(slot, SlotStatus.VALIDATED)
    with pytest.raises(ValueError):
        slots.switch(slot)
    with pytest.raises(ValueError):
        slots.commit()


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_recover_discards_half_done_slots(steps: int):
    base = _staged(TaskSlots(), 2)[0].switch("a").commit()
    slots, slot = base.begin_staging(name="ocr", version="v3", counter=3, keyid="k")
    for status in [SlotStatus.STAGED, SlotStatus.VALIDATED][: steps - 1]:
        slots = slots.mark(slot, status)
    recovered, notes = slots.recover()
    assert recovered.active == "a" and recovered.slots[slot].status is SlotStatus.EMPTY
    assert len(notes) == 1


def test_recover_rolls_back_an_uncommitted_trial():
    slots = _staged(TaskSlots(), 2)[0].switch("a").commit()
    slots = _staged(slots, 3)[0].switch("b")
    recovered, notes = slots.recover()
    assert recovered.active == "a" and recovered.slots["b"].status is SlotStatus.FAILED
    assert "interrupted" in (recovered.slots["b"].reason or "") and notes


@given(st.lists(st.sampled_from(["install", "commit", "rollback", "crash"]), max_size=30))
def test_any_sequence_keeps_a_servable_state(actions: list[str]):
    slots, counter = TaskSlots(), 1
    for action in actions:
        if action == "install" and not slots.on_trial():
            counter += 1
            staged, slot = _staged(slots, counter)
            slots = staged.switch(slot)
        elif action == "commit" and slots.on_trial():
            slots = slots.commit()
        elif action == "rollback" and slots.active is not None:
            slots = slots.rollback("test")
        elif action == "crash":
            slots = slots.recover()[0]
        # Invariants: the active slot is servable, the fallback is not the active one.
        if slots.active is not None:
            assert slots.slots[slots.active].status in (SlotStatus.TRIAL, SlotStatus.ACTIVE)
            assert slots.previous != slots.active
        if slots.previous is not None:
            assert slots.slots[slots.previous].status is SlotStatus.FALLBACK
    state = UpdateState().with_task("gate_ocr", slots)
    assert UpdateState.model_validate_json(state.model_dump_json()) == state
