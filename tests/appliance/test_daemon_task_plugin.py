"""Inference tasks are plugins: a task registered in a ``TaskRegistry`` (here a small
vehicle-type classifier over one image statistic) runs on every frame through the real
daemon, with its records, SLA and status, and without a line of daemon, pipeline or
redaction code knowing its name.  What a task declares it hides is blurred."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from pydantic import BaseModel

from appliance.daemon import Daemon
from appliance.inference.frame_check import require_bgr_frame
from appliance.inference.results import Detection, TaskResult
from appliance.inference.task_registry import TaskPlugin, TaskRegistry
from appliance.inference.tasks import TASKS
from appliance.sources.synthetic import SyntheticYardCamera
from tests.appliance.daemon_harness import TOKEN, base_url, read_events, site_config, wait_for

AUTH = {"Authorization": f"Bearer {TOKEN}"}


class VehicleTypeSettings(BaseModel):
    enabled: bool = True
    sla_p99_ms: float = 250.0
    min_edge_share: float = 0.002  # share of edge pixels above which something is at the gate


class VehicleTypeTask:
    """'container_truck' when the frame has structure (edges of a container, its text, a
    plate), 'empty_lane' when it is as flat as an empty gate lane."""

    name = "vehicle_type"
    model_name = "edge-share"
    model_version = "1"

    def __init__(self, settings: VehicleTypeSettings) -> None:
        self._min_edge_share = settings.min_edge_share

    def run(self, image_bgr: np.ndarray[Any, Any]) -> TaskResult:
        started = time.perf_counter()
        image = require_bgr_frame(image_bgr)
        edges = cv2.Canny(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), 100, 200)
        share = float(np.count_nonzero(edges)) / edges.size
        busy = share >= self._min_edge_share
        confidence = min(1.0, share / (2 * self._min_edge_share)) if busy else 1.0 - share
        height, width = image.shape[:2]
        label = "container_truck" if busy else "empty_lane"
        detection = Detection("vehicle_type", label, confidence, None, (0, 0, width, height))
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        return TaskResult(self.name, self.model_name, self.model_version, [detection], elapsed_ms)


def _with_vehicle_type() -> TaskRegistry:
    registry = TASKS.copy()  # the product's tasks stay as they are
    registry.register(
        TaskPlugin(
            name="vehicle_type",
            settings=lambda inference: VehicleTypeSettings(),
            load=lambda settings, models_dir: VehicleTypeTask(settings),
        )
    )
    return registry


def _flat_lane_jpeg() -> bytes:
    grey = np.full((720, 1280, 3), 128, np.uint8)
    noisy = grey + np.random.default_rng(0).normal(0, 6, grey.shape)
    ok, encoded = cv2.imencode(".jpg", np.clip(noisy, 0, 255).astype(np.uint8))
    assert ok
    return encoded.tobytes()


async def test_a_registered_task_runs_on_every_frame_through_the_daemon(tmp_path: Path) -> None:
    config = site_config(tmp_path, inference={"gate_ocr": {"enabled": False}})
    daemon = Daemon(config, task_registry=_with_vehicle_type())
    await daemon.start()
    try:
        assert sorted(daemon.tasks) == ["face_anonymize", "vehicle_type"]
        async with aiohttp.ClientSession() as http:
            for camera, jpeg in (
                ("gate-in", SyntheticYardCamera(3).frame(0).encode()),
                ("gate-out", _flat_lane_jpeg()),
            ):
                async with http.post(
                    f"{base_url(daemon)}/v1/frames?camera={camera}",
                    data=jpeg,
                    headers={**AUTH, "Content-Type": "image/jpeg"},
                ) as resp:
                    assert resp.status == 201
            await wait_for(lambda: sum(daemon.telemetry.results.values()) == 4)
            async with http.get(f"{base_url(daemon)}/v1/status", headers=AUTH) as resp:
                status = await resp.json()
    finally:
        await daemon.stop()
    assert status["models"]["loaded"] == ["face_anonymize", "vehicle_type"]
    assert status["tasks"]["vehicle_type"]["results"] == 2
    assert status["tasks"]["vehicle_type"]["sla_p99_ms"] == 250.0
    assert status["readiness"] == {"ready": True, "reason": None}
    events = await read_events(Path(config.outbox.path))
    labels = {
        e["camera_id"]: e["results"][0]["value"] for e in events if e["task"] == "vehicle_type"
    }
    assert labels == {"gate-in": "container_truck", "gate-out": "empty_lane"}
    assert {e["model_name"] for e in events if e["task"] == "vehicle_type"} == {"edge-share"}
    # each kept original is complete once its faces are known: the new task hides nothing,
    # so it neither holds a frame back nor is blurred
    index = (tmp_path / "var" / "kept-frames.jsonl").read_text(encoding="utf-8")
    kept = [json.loads(line) for line in index.splitlines()]
    last = {row["camera_id"]: row for row in kept}  # a frame's row grows with its records
    assert {camera: (len(row["seqs"]), row["complete"]) for camera, row in last.items()} == {
        "gate-in": (2, True),
        "gate-out": (2, True),
    }


def _result(task: str, kind: str, box: tuple[int, int, int, int]) -> TaskResult:
    return TaskResult(task, task, "1", [Detection(kind, "x", 0.9, None, box)], 1.0)


def test_what_a_registered_task_hides_is_blurred_without_naming_it_in_the_redaction() -> None:
    registry = TASKS.copy()
    registry.register(
        TaskPlugin(
            name="badge_finder",  # staff badges carry names: they must not leave the site
            settings=lambda inference: VehicleTypeSettings(),
            load=lambda settings, models_dir: VehicleTypeTask(settings),
            hides=frozenset({"badge"}),
        )
    )
    policy = registry.redaction_policy()
    loaded = ["face_anonymize", "badge_finder"]
    faces = _result("face_anonymize", "face", (1, 2, 3, 4))
    badges = _result("badge_finder", "badge", (10, 20, 30, 40))
    waiting = policy.redaction_of([faces], loaded)
    assert waiting is not None and not waiting.complete  # the badges are not known yet
    done = policy.redaction_of([faces, badges], loaded)
    assert done is not None and done.complete
    assert set(done.boxes) == {(1, 2, 3, 4), (10, 20, 30, 40)}
    assert policy.redaction_of([badges], loaded) is None  # faces unknown: never leaves
    assert "badge" not in TASKS.redaction_policy().hidden_kinds  # the product's registry


def test_a_task_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="already registered"):
        TASKS.copy().register(next(iter(TASKS)))
