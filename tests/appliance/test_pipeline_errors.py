"""A task that raises on a frame is logged with the task, the camera and the error, at most
once per task and interval, with the count of repeats it held back (not once per frame).
An append the outbox refuses is raised once every task's append has ended."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.inference.results import TaskResult
from appliance.log_throttle import LogThrottle
from appliance.pipeline import FrameProcessor
from appliance.telemetry import Telemetry
from sync.errors import OutboxDiskFull
from sync.outbox import Outbox
from tests.appliance.pipeline_harness import pipeline, synthetic_frame
from tests.support.clock import FakeClock


class BrokenTask:
    def __init__(self, name: str, error: Exception) -> None:
        self.name = name
        self.model_name = f"fake-{name}"
        self.model_version = "1"
        self.error = error

    def run(self, image_bgr: np.ndarray[Any, Any]) -> TaskResult:
        raise self.error


def _fields(record: logging.LogRecord) -> tuple[Any, Any, Any]:
    return (
        getattr(record, "task", None),
        getattr(record, "camera", None),
        getattr(record, "suppressed", None),
    )


def _processor(
    tmp_path: Path, outbox: Outbox, telemetry: Telemetry, clock: FakeClock
) -> FrameProcessor:
    tasks = {
        "gate_ocr": BrokenTask("gate_ocr", RuntimeError("input tensor has shape (1, 3)")),
        "face_anonymize": BrokenTask("face_anonymize", ValueError("no faces model")),
    }
    return pipeline(
        tmp_path, outbox, tasks, telemetry=telemetry, task_error_log=LogThrottle(60.0, clock)
    )


async def test_a_task_failing_on_every_frame_is_logged_once_per_interval_with_a_count(
    tmp_path: Path, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(500.0)
    telemetry = Telemetry({})
    processor = _processor(tmp_path, outbox, telemetry, clock)
    try:
        with caplog.at_level(logging.ERROR, logger="appliance.pipeline"):
            for _ in range(5):  # five frames within the minute
                assert await processor.process(synthetic_frame("gate-in")) == []
                clock.now += 1.0
            first_minute = [_fields(r) for r in caplog.records]
            first_messages = [r.getMessage() for r in caplog.records]
            caplog.clear()
            clock.now += 60.0
            await processor.process(synthetic_frame("gate-out"))
            next_minute = [_fields(r) for r in caplog.records]
            next_message = {_fields(r)[0]: r.getMessage() for r in caplog.records}
            assert all(r.exc_info is not None for r in caplog.records)
    finally:
        processor.close()
    assert sorted(first_minute) == [("face_anonymize", "gate-in", 0), ("gate_ocr", "gate-in", 0)]
    assert any(
        "task gate_ocr failed on a frame from gate-in: RuntimeError: input tensor has shape"
        in message
        for message in first_messages
    )
    assert sorted(next_minute) == [("face_anonymize", "gate-out", 4), ("gate_ocr", "gate-out", 4)]
    assert "ValueError: no faces model (4 more failures" in next_message["face_anonymize"]
    assert telemetry.task_errors == {"gate_ocr": 6, "face_anonymize": 6}
    assert telemetry.task_last_error["gate_ocr"].startswith("RuntimeError: input")


def test_the_throttle_lets_one_line_through_per_key_and_interval() -> None:
    clock = FakeClock(500.0)
    throttle = LogThrottle(10.0, clock)
    assert throttle.admit("a") == 0
    assert throttle.admit("a") is None
    assert throttle.admit("b") == 0  # keys are independent
    clock.now += 9.9
    assert throttle.admit("a") is None
    clock.now += 0.1
    assert throttle.admit("a") == 2
    assert throttle.admit("a") is None


class RefusingOutbox:
    """Refuses gate_ocr's record at once (disk full); face_anonymize's waits for ``release``."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = asyncio.Event()

    async def append(self, stream: object, payload: bytes) -> int:
        task = json.loads(payload)["task"]
        self.calls.append(task)
        if task == "gate_ocr":
            raise OutboxDiskFull("only 10 bytes free")
        await self.release.wait()
        return 7


class QuickTask:
    def __init__(self, name: str) -> None:
        self.name = name
        self.model_name = f"fake-{name}"
        self.model_version = "1"

    def run(self, image_bgr: np.ndarray[Any, Any]) -> TaskResult:
        return TaskResult(self.name, self.model_name, "1", [], 1.0)


async def test_a_refused_append_is_raised_only_once_every_task_s_append_has_ended(
    tmp_path: Path,
) -> None:
    """Else the frame counted as done (its spool file read again, the outbox maybe closed)
    while the other task's record was still being appended."""
    outbox = RefusingOutbox()
    tasks = {"gate_ocr": QuickTask("gate_ocr"), "face_anonymize": QuickTask("face_anonymize")}
    processor = pipeline(tmp_path, outbox, tasks)  # type: ignore[arg-type]
    processing = asyncio.create_task(processor.process(synthetic_frame("gate-in")))
    try:
        for _ in range(500):
            if len(outbox.calls) == 2:
                break
            await asyncio.sleep(0.01)
        assert sorted(outbox.calls) == ["face_anonymize", "gate_ocr"]
        for _ in range(20):
            await asyncio.sleep(0)
        assert not processing.done()  # face_anonymize's append has not ended yet
        outbox.release.set()
        with pytest.raises(OutboxDiskFull):
            await processing
    finally:
        outbox.release.set()
        if not processing.done():
            processing.cancel()
        await asyncio.gather(processing, return_exceptions=True)
        processor.close()
