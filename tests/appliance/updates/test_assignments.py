"""Assignments from the cloud: the manifest and artifact downloaded over real HTTP (a
loopback stand-in for the ingest service's model routes), installed in a running
daemon, reported in the handshake inventory; then told to roll back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from appliance.daemon import Daemon
from appliance.updates.assignments import AssignmentRunner
from appliance.updates.download import HttpFetcher
from sync.protocol import ModelAssignment
from tests.appliance.daemon_harness import wait_for
from tests.appliance.updates.updates_daemon_harness import Pusher, updates_config
from tests.support.releases import NEW_VERSION, ReleaseKit

DEVICE_TOKEN = "device-token-for-assignment-tests"


@pytest.fixture
async def model_cloud(release_kit: ReleaseKit) -> AsyncIterator[tuple[str, list[str]]]:
    """``GET /v1/models/{name}/{version}/manifest`` and ``/artifact`` (with Range)."""
    manifest = release_kit.sign(counter=2)
    requests: list[str] = []

    async def get_manifest(request: web.Request) -> web.Response:
        requests.append(request.path)
        return web.Response(body=manifest, content_type="application/json")

    async def get_artifact(request: web.Request) -> web.StreamResponse:
        requests.append(request.path)
        return web.FileResponse(release_kit.build.archive)

    app = web.Application()
    app.router.add_get("/v1/models/gate-ocr/{version}/manifest", get_manifest)
    app.router.add_get("/v1/models/gate-ocr/{version}/artifact", get_artifact)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}", requests
    await runner.cleanup()


@pytest.mark.slow  # a second full install with a shadow window; the switch test is the fast one
async def test_assignment_installs_reports_and_rolls_back(
    release_kit: ReleaseKit, tmp_path: Path, model_cloud: tuple[str, list[str]]
):
    base, requests = model_cloud
    daemon = Daemon(updates_config(tmp_path, release_kit))
    await daemon.start()
    pusher = Pusher(daemon)
    pushing = asyncio.create_task(pusher.run())
    runner_task = None
    try:
        assert daemon.updates is not None
        runner = AssignmentRunner(daemon.updates, HttpFetcher(base, DEVICE_TOKEN))
        runner_task = asyncio.create_task(runner.run())
        install = ModelAssignment(
            name="gate-ocr",
            version=NEW_VERSION,
            manifest_url=f"/v1/models/gate-ocr/{NEW_VERSION}/manifest",
            counter=2,
        )
        runner.offer([install])
        label = f"gate-ocr@{NEW_VERSION}"
        await wait_for(lambda: label in runner.results, timeout=110)
        assert runner.results[label] == "committed"
        assert requests == [
            f"/v1/models/gate-ocr/{NEW_VERSION}/manifest",
            f"/v1/models/gate-ocr/{NEW_VERSION}/artifact",
        ]
        (model,) = [m for m in daemon.updates.inventory() if m.task == "gate_ocr"]
        assert (model.version, model.release, model.counter) == (NEW_VERSION, "gate-ocr", 2)
        assert model.outcome is not None and model.outcome.result == "committed"
        # The same assignment again (next handshake): nothing more is fetched.
        runner.offer([install])
        await asyncio.sleep(0.2)
        assert len(requests) == 2

        rollback = install.model_copy(update={"action": "rollback"})
        runner.offer([rollback])
        await wait_for(lambda: runner.results.get(label) == "rolled back gate_ocr", timeout=60)
        (model,) = [m for m in daemon.updates.inventory() if m.task == "gate_ocr"]
        assert model.release is None and model.version != NEW_VERSION
        assert model.outcome is not None and model.outcome.result == "rolled_back"
        assert model.outcome.reason == "the cloud aborted the rollout"
    finally:
        pusher.stop.set()
        await pushing
        if runner_task is not None:
            runner_task.cancel()
            await asyncio.gather(runner_task, return_exceptions=True)
        await daemon.stop()
