"""The pure half of the dashboard: any /v1/status JSON -> panels and alerts, never an error."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.tui import panel_lines
from appliance.tui.status_view import Severity, read_status
from tests.appliance.tui.status_stub import recorded_status

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


def _all_lines(status: Any) -> list[str]:
    view = read_status(status)
    return [
        *panel_lines.alert_lines(view),
        *panel_lines.link_lines(view, 0.0),
        *panel_lines.sync_lines(view),
        *panel_lines.outbox_lines(view),
        panel_lines.outbox_summary(view),
        *panel_lines.inference_lines(view),
        *panel_lines.model_lines(view),
    ]


def _codes(status: Any) -> list[str]:
    return [alert.code for alert in read_status(status).alerts]


def test_the_recorded_status_reads_as_the_daemon_said() -> None:
    status = recorded_status()
    view = read_status(status)
    assert view.device_id == "gate-01" and view.link == "online"
    events = next(row for row in view.classes if row.name == "events")
    assert (events.records, events.bytes) == (18250, 96_400_000)
    assert view.pending_bytes == sum(c["bytes"] for c in status["outbox"]["classes"].values())
    assert view.drain_s == view.pending_bytes * 8 / 1_850_000.0
    assert view.upload is not None and round(view.upload.fraction, 3) == round(1.15 / 2.6, 3)
    assert [(a.code, a.severity) for a in view.alerts] == [
        ("disk_full", Severity.WARN),  # 1.588 GB free of 32 GB
        ("sla_broken", Severity.WARN),  # gate_ocr p99 455 > 300; face 66 < 80
    ]
    over = [line for line in panel_lines.inference_lines(view) if line.startswith("!")]
    assert len(over) == 1 and "gate_ocr" in over[0] and "OVER" in over[0]


def test_each_alert_has_its_trigger() -> None:
    base = recorded_status()
    base["disk"]["free_bytes"] = base["disk"]["total_bytes"] // 2
    for task in base["tasks"].values():
        task["latency_ms"]["p99"] = 1.0
    assert _codes(base) == []

    def changed(path: list[str], value: Any) -> dict[str, Any]:
        status = copy.deepcopy(base)
        node = status
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        return status

    assert _codes(changed(["outbox", "rejections"], {"full": 3})) == ["outbox_refusing"]
    assert _codes(changed(["frames_not_stored"], {"gate-in": {"OutboxFull": 2}})) == [
        "outbox_refusing"
    ]
    assert _codes(changed(["outbox", "quarantined"], ["outbox.bad-1"])) == ["quarantined_db"]
    assert _codes(changed(["sync", "clock_skew_s"], -95.0)) == ["clock_skew"]
    assert _codes(changed(["sync", "clock_skew_s"], 5.0)) == []
    assert _codes(changed(["updates"], {"gate_ocr": {"state": "rolled_back"}})) == [
        "update_rolled_back"
    ]
    assert _codes(changed(["models", "failed"], {"gate_ocr": "sha256 mismatch"})) == [
        "model_not_loaded"
    ]
    assert _codes(changed(["sync", "link"], "offline")) == ["link_offline"]
    assert _codes(changed(["readiness"], {"ready": False, "reason": "gate_ocr missing"})) == [
        "not_ready"
    ]
    assert _codes(changed(["readiness"], {"ready": True, "reason": None})) == []
    failing = {"spool": {"state": "backing_off", "last_error": "PermissionError: spool"}}
    assert _codes(changed(["supervised"], failing)) == ["task_failing"]
    full = changed(["disk", "free_bytes"], base["disk"]["total_bytes"] // 50)
    assert [(a.code, a.severity) for a in read_status(full).alerts] == [
        ("disk_full", Severity.FAIL)
    ]
    assert all(
        line.startswith(("!", "   -> ")) for line in panel_lines.alert_lines(read_status(full))
    )


def test_nothing_known_shows_as_unknown_not_as_zero() -> None:
    view = read_status({})
    assert view.alerts == () and view.drain_s is None
    lines = _all_lines({})
    assert "no cloud configured" in lines[1]
    assert any("?" in line for line in panel_lines.outbox_lines(view))


def test_numbers_out_of_range_show_as_unknown() -> None:
    status = recorded_status()
    status["outbox"]["classes"]["events"]["records"] = float("inf")
    status["outbox"]["classes"]["events"]["bytes"] = 10**400
    status["sync"]["upload"]["length"] = float("nan")
    status["tasks"]["gate_ocr"]["latency_ms"]["p99"] = float("-inf")
    view = read_status(json.loads(json.dumps(status)))
    events = next(row for row in view.classes if row.name == "events")
    assert (events.records, events.bytes) == (None, None)
    assert view.upload is None and not view.tasks[1].over_sla
    _all_lines(status)


@settings(max_examples=150, deadline=None)
@given(JSON)
def test_any_json_renders_without_error(value: Any) -> None:
    _all_lines(value)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_field_of_the_real_shape_may_be_missing_or_of_another_type(data: st.DataObject) -> None:
    status = recorded_status()
    node: Any = status
    while isinstance(node, dict) and node:
        key = data.draw(st.sampled_from(sorted(node)))
        if not isinstance(node[key], dict) or data.draw(st.booleans()):
            if data.draw(st.booleans()):
                del node[key]
            else:
                node[key] = data.draw(JSON)
            break
        node = node[key]
    _all_lines(json.loads(json.dumps(status, allow_nan=True)))


def test_model_updates_report_shows_slots_and_a_rolled_back_release() -> None:
    models = {
        "gate_ocr": {
            "serving": "b",
            "model_version": "1.5.0+det.aaaa",
            "on_trial": True,
            "last_verdict": None,
        },
        "plate_ocr": {
            "serving": "a",
            "model_version": "2.0.0",
            "on_trial": False,
            "health": {"frames": 10, "remaining_s": 3500},
            "last_verdict": {"commit": True, "reason": "shadow window passed"},
        },
        "face_anonymize": {
            "serving": "pinned",
            "model_version": "0.10.21+bbff11ce",
            "on_trial": False,
            "last_verdict": {"commit": False, "reason": "p99 over the SLA in shadow"},
        },
    }
    view = read_status(recorded_status(), models=models)
    lines = panel_lines.model_lines(view)
    assert lines[0].startswith("! face_anonymize") and "pinned ROLLED BACK" in lines[0]
    assert lines[1].startswith("  gate_ocr") and lines[1].endswith("b TRIAL")
    assert lines[2].startswith("  plate_ocr") and lines[2].endswith("a WATCH")
    rolled = [a for a in view.alerts if a.code == "update_rolled_back"]
    assert len(rolled) == 1 and "p99 over the SLA in shadow" in rolled[0].message
    assert read_status(recorded_status(), models=["not", "a", "report"]).model_rows == ()
