"""The health watch after a commit, on real slots and the real OCR models: a release
committed before a restart is watched again; a regression on live frames rolls it
back to the previous slot and is reported as ``health_regression``; a watch that
ends healthy is audited and its mark cleared."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from appliance.daemon import Daemon
from sync.outbox import Outbox
from sync.protocol import Stream
from tests.appliance.daemon_harness import wait_for
from tests.appliance.updates.agent_harness import committed_release
from tests.appliance.updates.updates_daemon_harness import Pusher, updates_config
from tests.support.releases import NEW_VERSION, ReleaseKit


def _audit(outbox: Outbox | None) -> list[dict[str, object]]:
    assert outbox is not None
    records = outbox.read(Stream.CRITICAL, max_records=1000)
    return [json.loads(json.loads(r.payload)["body"]) for r in records]


def _state(updates_dir: Path) -> dict[str, object]:
    slots: dict[str, object] = json.loads((updates_dir / "state.json").read_text())["tasks"][
        "gate_ocr"
    ]
    return slots


async def test_a_regression_after_a_restart_rolls_back_and_is_reported(
    release_kit: ReleaseKit, tmp_path: Path
):
    updates_dir = await committed_release(tmp_path / "before", release_kit, watch=True)
    # Any real inference takes longer than a millionth of the SLA: the first block of
    # live frames is a p99 regression (the shadow window is behind this release).
    config = updates_config(
        tmp_path,
        release_kit,
        updates_dir=str(updates_dir),
        health_block_frames=2,
        health_p99_vs_sla=1e-6,
    )
    daemon = Daemon(config)
    await daemon.start()
    try:
        updates = daemon.updates
        assert updates is not None
        assert daemon.tasks["gate_ocr"].model_version == NEW_VERSION
        watch = updates.report()["gate_ocr"]["health"]
        assert watch is not None and watch["block_size"] == 2
        pusher = Pusher(daemon)
        pushing = asyncio.create_task(pusher.run())
        # the slot state changes first, then the pinned model is loaded and swapped in
        await wait_for(lambda: daemon.tasks["gate_ocr"].model_version != NEW_VERSION, 120)
        pusher.stop.set()
        await pushing
        report = updates.report()["gate_ocr"]
        (info,) = [m for m in updates.inventory() if m.task == "gate_ocr"]
        audit = _audit(daemon.outbox)
    finally:
        await daemon.stop()
    assert report["serving"] == "pinned" and report["health"] is None
    assert report["last_verdict"]["commit"] is False
    assert report["last_verdict"]["reason"].startswith("health regression over 2 frames: p99")
    assert info.counter is None  # the pinned models serve again
    assert info.outcome is not None
    assert (info.outcome.result, info.outcome.check, info.outcome.counter) == (
        "rolled_back",
        "health_regression",
        2,
    )
    (rolled,) = [a for a in audit if a["action"] == "model.rolled_back"]
    assert rolled["detail"]["check"] == "health_regression"
    assert rolled["detail"]["actor"] == "ota-agent" and rolled["detail"]["counter"] == 2
    state = _state(updates_dir)
    assert state["watching"] is None and state["active"] is None
    assert "gate-ocr@2" in state["rejected"]  # never offered again on this device


async def test_a_watch_that_ends_healthy_is_audited_and_its_mark_cleared(
    release_kit: ReleaseKit, tmp_path: Path
):
    updates_dir = await committed_release(tmp_path / "before", release_kit, watch=True)
    config = updates_config(
        tmp_path, release_kit, updates_dir=str(updates_dir), health_watch_s=0.05
    )
    daemon = Daemon(config)
    await daemon.start()
    try:
        updates = daemon.updates
        assert updates is not None
        await wait_for(lambda: _state(updates_dir)["watching"] is None, timeout=60)
        report = updates.report()["gate_ocr"]
        (info,) = [m for m in updates.inventory() if m.task == "gate_ocr"]
        audit = _audit(daemon.outbox)
    finally:
        await daemon.stop()
    assert report["model_version"] == NEW_VERSION and report["health"] is None
    assert info.counter == 2 and info.outcome is not None
    assert info.outcome.result == "committed"
    (passed,) = [a for a in audit if a["action"] == "model.health_passed"]
    assert passed["detail"]["counter"] == 2 and "frames" in passed["detail"]["health"]
    assert not [a for a in audit if a["action"] == "model.rolled_back"]
