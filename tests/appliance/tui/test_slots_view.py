"""The models screen's reading of ``GET /v1/models``: both slots, what serves, the check
in progress; any JSON value is accepted (never a traceback in the TUI)."""

from __future__ import annotations

import pytest

from appliance.tui.screens.models import slot_cells
from appliance.tui.slots_view import read_slots, task_detail
from tests.appliance.tui.status_stub import recorded_models

REPORT = recorded_models()


def test_both_slots_in_slot_order_and_the_serving_one_marked() -> None:
    face, gate = read_slots(REPORT)
    assert (face.task, gate.task) == ("face_anonymize", "gate_ocr")
    assert [(r.slot, r.status, r.serving, r.counter) for r in gate.slots] == [
        ("a", "fallback", False, 2),
        ("b", "active", True, 3),
    ]
    assert slot_cells(gate.slots[1]) == (
        "gate_ocr",
        "b",
        "gate-ocr",
        "2026-12-07-rc1",
        "3",
        "active",
        "<- serving",
    )
    assert slot_cells(face.slots[0])[5] == "FAILED: golden output differs"


def test_detail_names_the_rollback_target_and_the_check_in_progress() -> None:
    face, gate = read_slots(REPORT)
    lines = task_detail(gate)
    assert lines[0] == "gate_ocr: serving b (2026-12-07-rc1); a rollback goes to a"
    assert lines[1] == ("  health watch: 120 frames, 1 errors, 2 healthy blocks of 50, 3400 s left")
    assert lines[2] == "  last verdict: committed: shadow window passed"
    face_lines = task_detail(face)
    assert "ON TRIAL" in face_lines[0] and "nothing (pinned models serve)" in face_lines[0]
    assert face_lines[1].startswith("  shadow window: 3 frames compared (1 skipped), p99 40.5")
    assert face_lines[2].startswith("  last verdict: ROLLED BACK: health regression")


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        "x",
        {"gate_ocr": 5},
        {"gate_ocr": {"slots": [1, 2], "health": "?", "shadow": 3, "serving": 7}},
        {"gate_ocr": {"slots": {"a": {"counter": True, "status": 5}, "b": "x"}}},
        {"gate_ocr": {"health": {"frames": "many"}, "last_verdict": {"commit": "yes"}}},
    ],
)
def test_odd_bodies_read_as_unknown_never_raise(raw: object) -> None:
    for task in read_slots(raw):
        assert all(isinstance(line, str) for line in task_detail(task))
        for row in task.slots:
            assert row.counter is None and isinstance(slot_cells(row)[5], str)
