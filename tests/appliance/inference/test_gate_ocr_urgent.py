"""Gate OCR holds its model calls while urgent work (the face task's run) is in flight."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from appliance.inference.gate_ocr import DET_MODEL, REC_MODEL, GateOcrTask, load_gate_ocr
from appliance.inference.model_files import model_path
from appliance.inference.results import TaskResult
from appliance.inference.settings import GateOcrSettings
from appliance.inference.urgent_work import URGENT
from appliance.sources.synthetic import SyntheticYardCamera
from tests.appliance.inference.conftest import MODELS_DIR


def _reader(wait_ms: float) -> GateOcrTask:
    return load_gate_ocr(
        GateOcrSettings(wait_for_urgent_ms=wait_ms),
        model_path(DET_MODEL, MODELS_DIR),
        model_path(REC_MODEL, MODELS_DIR),
    )


def _read_in_thread(
    task: GateOcrTask, image: np.ndarray[Any, Any]
) -> tuple[threading.Thread, list[TaskResult]]:
    results: list[TaskResult] = []
    thread = threading.Thread(target=lambda: results.append(task.run(image)))
    thread.start()
    return thread, results


def test_a_read_waits_for_urgent_work_then_reads_the_same() -> None:
    frame = SyntheticYardCamera(3, difficulty="clean").frame(0)
    task = _reader(wait_ms=10_000)
    try:
        alone = task.run(frame.image_bgr)
        URGENT.begin()
        try:
            thread, results = _read_in_thread(task, frame.image_bgr)
            thread.join(1.0)  # a read alone takes well under a second
            assert thread.is_alive() and not results, "read while urgent work ran"
        finally:
            URGENT.end()
        thread.join(30.0)
        assert [(d.kind, d.value) for d in results[0].detections] == [
            (d.kind, d.value) for d in alone.detections
        ]
    finally:
        task.close()
    assert URGENT.running_now == 0


def test_with_no_wait_configured_a_read_runs_beside_urgent_work() -> None:
    frame = SyntheticYardCamera(3, difficulty="clean").frame(0)
    task = _reader(wait_ms=0)
    try:
        with URGENT.running():
            thread, results = _read_in_thread(task, frame.image_bgr)
            thread.join(30.0)
            assert not thread.is_alive() and results
    finally:
        task.close()
