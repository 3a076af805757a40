"""The models screen against a REAL daemon with model updates on: a real release of the
OCR model committed into slot a, both slots shown, and a rollback chosen on the
screen that really goes through the local API (audited, pinned models serve again)."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable

from appliance.daemon import Daemon
from appliance.tui.app import YardlinkTui
from appliance.tui.client import ApplianceClient
from appliance.tui.screens.models import ModelsScreen
from tests.appliance.daemon_harness import TOKEN, wait_for
from tests.appliance.tui.tui_harness import until
from tests.appliance.updates import conftest as updates_conftest
from tests.appliance.updates.agent_harness import (
    audit_bodies,
    committed_release,
)
from tests.appliance.updates.updates_daemon_harness import updates_config
from tests.support.releases import NEW_VERSION, ReleaseKit

release_kit = updates_conftest.release_kit  # the session's real signed OCR release


def _cells(screen: ModelsScreen) -> list[list[str]]:
    table = screen.query_one("#slots", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_slots_shown_and_a_rollback_from_the_screen_is_done_and_audited(
    release_kit: ReleaseKit, tmp_path: Path
) -> None:
    updates_dir = await committed_release(tmp_path / "before", release_kit)
    daemon = Daemon(updates_config(tmp_path, release_kit, updates_dir=str(updates_dir)))
    await daemon.start()
    app = YardlinkTui(ApplianceClient(daemon.api_url, TOKEN), poll_s=0.2, follow_events=False)
    try:
        assert daemon.tasks["gate_ocr"].model_version == NEW_VERSION
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.models_report is not None, what="GET /v1/models")
            await pilot.press("o")
            screen = app.screen
            assert isinstance(screen, ModelsScreen)
            await until(pilot, lambda: len(_cells(screen)) == 2, what="both slots")
            assert _cells(screen) == [
                ["gate_ocr", "a", "gate-ocr", NEW_VERSION, "2", "active", "<- serving"],
                ["gate_ocr", "b", "-", "-", "-", "empty", ""],
            ]
            detail = str(screen.query_one("#models-detail").render())
            assert "serving a" in detail and "a rollback goes to pinned" in detail
            await pilot.press("m")  # the selected task, pre-filled in the dialog
            assert app.screen.__class__.__name__ == "RollbackScreen"
            await pilot.press("tab", *"plates misread", "enter")
            await until(pilot, lambda: app.screen.__class__.__name__ == "ConfirmScreen")
            await pilot.press("y")
            await until(pilot, lambda: app.last_action is not None, 180, "the rollback answer")
            assert app.last_action == "model of gate_ocr rolled back"
            failed = ["gate_ocr", "a", "gate-ocr", NEW_VERSION, "2", "FAILED: plates misread", ""]
            await until(pilot, lambda: failed in _cells(screen), what="slot a failed")
            await pilot.press("escape")
            assert app.screen is app.dashboard
        await wait_for(lambda: daemon.tasks["gate_ocr"].model_version != NEW_VERSION, 60)
        assert daemon.outbox is not None
        (rolled,) = [a for a in audit_bodies(daemon.outbox) if a["action"] == "model.rolled_back"]
        assert rolled["detail"]["actor"] == "technician"
        assert rolled["detail"]["reason"] == "plates misread"
        assert rolled["detail"]["now_serving"] == "pinned"
    finally:
        await daemon.stop()
