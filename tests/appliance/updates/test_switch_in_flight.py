"""A task switched out while a frame is still in it is closed only once that frame is
done: the switch waits for the old task's runs, then closes it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from appliance.daemon import Daemon
from appliance.inference.results import InferenceTask, TaskResult
from appliance.sources.synthetic import SyntheticYardCamera
from appliance.updates.release_tasks import close_task
from tests.appliance.daemon_harness import read_events, wait_for
from tests.appliance.updates.agent_harness import committed_release
from tests.appliance.updates.updates_daemon_harness import HEADERS, updates_config
from tests.support.releases import NEW_VERSION, ReleaseKit


class HeldRun:
    """The serving release's task, holding each frame until ``release`` is set, and
    noting whether it was closed while a frame was in its ``run``."""

    def __init__(self, task: InferenceTask) -> None:
        self._task = task
        self.name, self.model_name = task.name, task.model_name
        self.model_version = task.model_version
        self.running = threading.Event()
        self.release = threading.Event()
        self.closed = False
        self.closed_while_running = False

    def run(self, image_bgr: np.ndarray[Any, Any]) -> TaskResult:
        self.running.set()
        try:
            assert self.release.wait(120), "the test never released the frame"
            return self._task.run(image_bgr)
        finally:
            self.running.clear()

    def close(self) -> None:
        self.closed_while_running = self.running.is_set()
        self.closed = True
        close_task(self._task)


async def test_a_rollback_closes_the_old_task_only_after_its_frame_in_flight(
    release_kit: ReleaseKit, tmp_path: Path
):
    updates_dir = await committed_release(tmp_path / "before", release_kit)
    daemon = Daemon(updates_config(tmp_path, release_kit, updates_dir=str(updates_dir)))
    await daemon.start()
    try:
        updates = daemon.updates
        assert updates is not None
        held = HeldRun(daemon.tasks["gate_ocr"])
        assert held.model_version == NEW_VERSION
        daemon.processor.swap_task("gate_ocr", held)
        frame = SyntheticYardCamera(seed=5).frame(0).encode()
        async with aiohttp.ClientSession() as session:
            url = f"{daemon.api_url}/v1/frames?camera=gate-in"
            async with session.post(url, data=frame, headers=HEADERS) as response:
                assert response.status in (201, 202), await response.text()
        await wait_for(held.running.is_set, 120)
        rolling_back = asyncio.create_task(updates.rollback("gate_ocr", "in-flight test"))
        # the pinned model is loaded and swapped in while the frame is still held
        await wait_for(lambda: daemon.tasks["gate_ocr"] is not held, 120)
        await asyncio.wait({rolling_back}, timeout=1.0)
        assert not held.closed and not rolling_back.done()
        held.release.set()
        report = await asyncio.wait_for(rolling_back, 120)
        assert report["serving"] == "pinned"
        assert held.closed and not held.closed_while_running
        await wait_for(lambda: daemon.telemetry.results["gate_ocr"] == 1, 60)  # durable
    finally:
        held.release.set()
        await daemon.stop()
    events = [e for e in await read_events(tmp_path / "var" / "outbox") if e["task"] == "gate_ocr"]
    assert [e["model_version"] for e in events] == [NEW_VERSION]  # the held frame, stored
