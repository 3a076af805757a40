"""An urgent task's run (the face task's) counts as urgent work from the moment the frame's
runs are submitted, before any task's thread starts, until it ends, even when it fails;
a task that is not urgent never counts."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.inference.face_anonymize import FACE_MODEL, load_face_anonymize
from appliance.inference.model_files import model_path
from appliance.inference.results import TaskResult
from appliance.inference.settings import FaceAnonymizeSettings
from appliance.inference.urgent_work import URGENT
from sync.outbox import Outbox
from tests.appliance.pipeline_harness import HeldTask, pipeline, synthetic_frame

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


class Probe:
    """Not urgent: notes how much urgent work was in flight when its run started."""

    name = "probe"
    model_name = "probe"
    model_version = "1"

    def __init__(self) -> None:
        self.looked = threading.Event()
        self.seen: list[int] = []

    def run(self, image_bgr: np.ndarray[Any, Any]) -> TaskResult:
        self.seen.append(URGENT.running_now)
        self.looked.set()
        return TaskResult(self.name, self.model_name, self.model_version, [], 0.0)


class UrgentTask:
    """Urgent; holds its run until the probe has looked, then ends (or raises)."""

    name = "urgent"
    model_name = "urgent"
    model_version = "1"
    urgent = True

    def __init__(self, probe: Probe, error: Exception | None = None) -> None:
        self.probe = probe
        self.error = error

    def run(self, image_bgr: np.ndarray[Any, Any]) -> TaskResult:
        assert self.probe.looked.wait(10.0)
        if self.error is not None:
            raise self.error
        return TaskResult(self.name, self.model_name, self.model_version, [], 0.0)


async def test_an_urgent_run_is_urgent_work_from_submission_to_its_end(
    tmp_path: Path, outbox: Outbox
) -> None:
    probe = Probe()
    # the probe is submitted first: only counting from submission makes it see the run
    processor = pipeline(tmp_path, outbox, {"probe": probe, "urgent": UrgentTask(probe)})
    try:
        assert len(await processor.process(synthetic_frame())) == 2
    finally:
        processor.close()
    assert probe.seen == [1]
    assert URGENT.running_now == 0


async def test_a_failing_urgent_run_still_ends_its_urgent_work(
    tmp_path: Path, outbox: Outbox
) -> None:
    probe = Probe()
    failing = UrgentTask(probe, RuntimeError("interpreter failed"))
    processor = pipeline(tmp_path, outbox, {"probe": probe, "urgent": failing})
    try:
        assert len(await processor.process(synthetic_frame())) == 1  # the probe's record only
    finally:
        processor.close()
    assert probe.seen == [1]
    assert URGENT.running_now == 0


@pytest.mark.parametrize("urgent", [True, False])
async def test_the_face_task_is_urgent_unless_its_settings_say_not(
    tmp_path: Path, outbox: Outbox, urgent: bool
) -> None:
    face = load_face_anonymize(
        FaceAnonymizeSettings(urgent=urgent), model_path(FACE_MODEL, MODELS_DIR)
    )
    probe = Probe()

    processor = pipeline(tmp_path, outbox, {"face_anonymize": face, "probe": probe})
    seen_during: list[int] = []
    original = face.faces_and_unsure

    def watched(image: Any, reduced_by: int = 1) -> Any:
        seen_during.append(URGENT.running_now)
        return original(image, reduced_by)

    face.faces_and_unsure = watched  # type: ignore[method-assign, assignment]
    try:
        assert len(await processor.process(synthetic_frame())) == 2
    finally:
        processor.close()
        face.close()
    assert seen_during == [1 if urgent else 0]
    assert URGENT.running_now == 0


class HeldUrgentTask(HeldTask):
    """Urgent; holds its first run until ``release`` is set."""

    name = "urgent"
    urgent = True


async def test_an_urgent_run_cancelled_while_queued_ends_its_urgent_work(
    tmp_path: Path, outbox: Outbox
) -> None:
    held = HeldUrgentTask()
    processor = pipeline(tmp_path, outbox, {"urgent": held})
    try:
        first = asyncio.create_task(processor.process(synthetic_frame()))
        while held.runs == 0:
            await asyncio.sleep(0.005)
        second = asyncio.create_task(processor.process(synthetic_frame()))
        await asyncio.sleep(0.05)  # its run is queued behind the held one
        assert URGENT.running_now == 2
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert URGENT.running_now == 1  # the queued run will never start
        held.release.set()
        assert len(await first) == 1
    finally:
        held.release.set()
        processor.close()
    assert held.runs == 1
    assert URGENT.running_now == 0
