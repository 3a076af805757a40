"""SVG snapshots of the main screens at 80x24 and 120x40.

pytest-textual-snapshot needs syrupy 4.8, which refuses pytest 9 (this project's
pin), so the same idea is done here in a few lines: Textual's own
``export_screenshot`` SVG is compared with the file under snapshots/.  The data
is a RECORDED /v1/status served by a tiny aiohttp stub (status_stub.py), the
only place the TUI tests do not use a real daemon: a snapshot needs the same
figures every run.  To accept a changed screen: YARDLINK_UPDATE_SNAPSHOTS=1,
then look at the new SVG.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from appliance.tui.app import YardlinkTui
from appliance.tui.client import ApplianceClient
from tests.appliance.tui.status_stub import recorded_models, recorded_status, serving_status
from tests.appliance.tui.tui_harness import sleep, until

SNAPSHOTS = Path(__file__).with_name("snapshots")
FIXED_NOW = 1796617035.0


async def _screenshot(
    size: tuple[int, int], keys: tuple[str, ...] = (), models: dict[str, Any] | None = None
) -> str:
    async with serving_status(recorded_status(), models) as url:
        client = ApplianceClient(
            url, "token-of-the-snapshot-tests-0123456789", label="http://127.0.0.1:8477"
        )
        app = YardlinkTui(client, follow_events=False, poll_s=3600, clock=lambda: FIXED_NOW)
        async with app.run_test(size=size) as pilot:
            await until(pilot, lambda: app.polls >= 1 and app.dashboard.query_one("#link").lines)
            if keys:
                await pilot.press(*keys)
            await sleep(pilot, 0.3)
            return app.export_screenshot()


def _compare(name: str, svg: str) -> None:
    path = SNAPSHOTS / f"{name}.svg"
    if os.environ.get("YARDLINK_UPDATE_SNAPSHOTS") == "1" or not path.exists():
        if os.environ.get("CI") and not path.exists():
            pytest.fail(f"snapshot {path.name} missing: make it with YARDLINK_UPDATE_SNAPSHOTS=1")
        path.write_text(svg)
        return
    if path.read_text() != svg:
        fresh = path.with_suffix(".new.svg")
        fresh.write_text(svg)
        pytest.fail(f"{name} differs from {path.name}; the new screen is in {fresh.name}")


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
async def test_dashboard(size: tuple[int, int]) -> None:
    _compare(f"dashboard_{size[0]}x{size[1]}", await _screenshot(size))


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
async def test_help_screen(size: tuple[int, int]) -> None:
    _compare(f"help_{size[0]}x{size[1]}", await _screenshot(size, ("question_mark",)))


async def test_confirmation_dialog_at_80x24() -> None:
    _compare("confirm_pause_80x24", await _screenshot((80, 24), ("p",)))


async def test_models_screen_at_120x40() -> None:
    _compare("models_120x40", await _screenshot((120, 40), ("o",), recorded_models()))
