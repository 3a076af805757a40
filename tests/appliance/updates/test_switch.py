"""A release switched into the running daemon while frames keep coming: zero frames
dropped, each record names the model version that really ran, a shadow window
against the old model, commit; then a technician rolls back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from appliance.daemon import Daemon
from appliance.inference.model_fold import REC_FOLD
from appliance.updates.release_tasks import files_in_use
from sync.protocol import Stream
from tests.appliance.daemon_harness import TOKEN, read_events, wait_for
from tests.appliance.updates.updates_daemon_harness import Pusher, updates_config
from tests.support.releases import NEW_VERSION, ReleaseKit


async def test_switch_shadow_commit_then_technician_rollback(
    release_kit: ReleaseKit, tmp_path: Path
):
    daemon = Daemon(updates_config(tmp_path, release_kit))
    await daemon.start()
    try:
        assert daemon.updates is not None
        pinned = daemon.tasks["gate_ocr"].model_version
        pusher = Pusher(daemon)
        pushing = asyncio.create_task(pusher.run())
        await wait_for(lambda: pusher.accepted >= 2)
        verdict = await daemon.updates.install(
            release_kit.build.archive, release_kit.sign(counter=2)
        )
        assert verdict.commit, verdict.reason
        assert verdict.evidence["frames"] >= 3 and verdict.evidence["agreement"] == 1.0
        assert daemon.tasks["gate_ocr"].model_version == NEW_VERSION
        # What was shadowed and now serves is the set the golden check ran: derived files.
        slot = daemon.updates.agent.store.slot_dir("gate_ocr", "a")
        serving = files_in_use(daemon.tasks["gate_ocr"], slot)
        assert f"model/{REC_FOLD.folded}" in serving
        after_commit = pusher.accepted
        await wait_for(lambda: pusher.accepted >= after_commit + 2)
        # The technician rolls back through the local API (token required).
        url = f"{daemon.api_url}/v1/models/gate_ocr/rollback"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json={"reason": "technician test"}) as response:
                assert response.status == 401
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with session.post(
                url, json={"reason": "technician test"}, headers=headers
            ) as response:
                assert response.status == 200, await response.text()
                report = await response.json()
        assert report["serving"] == "pinned" and report["model_version"] == pinned
        after_rollback = pusher.accepted
        await wait_for(lambda: pusher.accepted >= after_rollback + 2)
        pusher.stop.set()
        await pushing
        await wait_for(lambda: pusher.processed() == pusher.accepted)
        assert daemon.outbox is not None
        records = daemon.outbox.read(Stream.CRITICAL)
        audit = [json.loads(json.loads(r.payload)["body"]) for r in records]
    finally:
        await daemon.stop()

    events = sorted(
        (e for e in await read_events(tmp_path / "var" / "outbox") if e["task"] == "gate_ocr"),
        key=lambda e: e["seq"],
    )
    # Zero frames dropped: one record per accepted frame, none lost over two switches.
    assert len(events) == pusher.accepted
    assert sum(daemon.queues.dropped.values()) == 0
    versions = [e["model_version"] for e in events]
    # pinned -> release -> pinned, each frame wholly on one model (no interleaving).
    runs = [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]
    assert runs == [pinned, NEW_VERSION, pinned], runs
    assert versions.count(NEW_VERSION) >= 3
    actions = [b["action"] for b in audit]
    assert actions == ["model.staged", "model.switched", "model.committed", "model.rolled_back"]
    assert audit[2]["detail"]["shadow"]["frames"] >= 3
    assert audit[0]["detail"]["runs"] == serving
    assert audit[3]["detail"]["actor"] == "technician"
