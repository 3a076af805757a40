"""A frame's face record does not wait for an earlier frame's slow task.

Each task takes frames in order on its own worker thread, and a consumer holds its
frame until every task's record is durable: while a new scene's gate OCR runs, the
consumer of the next frame waits too (its OCR is queued behind).  With two consumers
a third frame waited in the camera queue, its face task idle, for that OCR (the
held-scene face p99 of issue 20, docs/INFERENCE.md).  Here a plugin task stands in for
the slow OCR, held on the first frame until the test lets it go; the real face task
runs beside it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from appliance.daemon import Daemon
from appliance.inference.task_registry import TaskPlugin, TaskRegistry
from appliance.inference.tasks import TASKS
from appliance.sources.synthetic import SyntheticYardCamera
from tests.appliance.daemon_harness import TOKEN, site_config, wait_for
from tests.appliance.pipeline_harness import HeldTask


class HeldSettings(BaseModel):
    enabled: bool = True
    sla_p99_ms: float = 1000.0


async def test_a_frames_face_is_not_held_back_by_an_earlier_frames_slow_task(
    tmp_path: Path,
) -> None:
    held = HeldTask()
    registry: TaskRegistry = TASKS.copy()
    registry.register(
        TaskPlugin(name=held.name, settings=lambda i: HeldSettings(), load=lambda s, d: held)
    )
    config = site_config(
        tmp_path,
        inference={"gate_ocr": {"enabled": False}},
        local_api={"port": 0, "technician_token": TOKEN, "push_mode": "queued"},
    )
    daemon = Daemon(config, task_registry=registry)
    await daemon.start()
    camera = SyntheticYardCamera(5, plate_probability=1.0, difficulty="clean")
    try:
        assert sorted(daemon.tasks) == ["face_anonymize", held.name]
        for index in range(3):
            await daemon.submit_frame("gate-in", camera.frame(index).encode(), "image/jpeg", {})
        # the first frame's slow task is still held: every frame's face is durable anyway
        await wait_for(lambda: daemon.telemetry.results["face_anonymize"] == 3, timeout=20.0)
        assert not held.release.is_set() and daemon.telemetry.results[held.name] == 0
    finally:
        held.release.set()
    try:
        await wait_for(lambda: daemon.telemetry.results[held.name] == 3)
    finally:
        await daemon.stop()
