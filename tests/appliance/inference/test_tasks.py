from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from appliance.errors import BadFrame
from appliance.inference.settings import InferenceSettings
from appliance.inference.tasks import build_tasks


def test_default_settings_load_both_tasks(models_dir: Path) -> None:
    tasks, errors = build_tasks(InferenceSettings(), models_dir)
    assert errors == {}
    assert set(tasks) == {"gate_ocr", "face_anonymize"}
    for name, task in tasks.items():
        result = task.run(np.zeros((360, 640, 3), np.uint8))
        assert result.task == name == task.name
        assert result.model_version == task.model_version


def test_missing_runtime_is_reported_and_the_other_task_still_loads(models_dir: Path) -> None:
    settings = InferenceSettings.model_validate(
        {"face_anonymize": {"runtime": {"kind": "litert", "library": "tflite-runtime"}}}
    )
    tasks, errors = build_tasks(settings, models_dir)
    assert set(tasks) == {"gate_ocr"}
    assert errors["face_anonymize"].startswith("runtime unavailable")
    assert "tflite_runtime" in errors["face_anonymize"]


def test_corrupt_model_file_is_reported_not_raised(models_dir: Path, tmp_path: Path) -> None:
    for model in models_dir.glob("*.onnx"):
        shutil.copy(model, tmp_path / model.name)
    (tmp_path / "face_detection_short_range.tflite").write_bytes(b"\x00garbage" * 64)
    settings = InferenceSettings.model_validate({"gate_ocr": {"enabled": False}})
    tasks, errors = build_tasks(settings, tmp_path)
    assert tasks == {}
    assert "sha256" in errors["face_anonymize"]


def test_wrong_runtime_for_a_model_is_a_load_error(models_dir: Path) -> None:
    settings = InferenceSettings.model_validate(
        {"gate_ocr": {"runtime": {"kind": "litert"}}, "face_anonymize": {"enabled": False}}
    )
    tasks, errors = build_tasks(settings, models_dir)
    assert tasks == {}
    assert errors["gate_ocr"].startswith("model failed to load")


def test_settings_forbid_unknown_keys_and_runtimes() -> None:
    with pytest.raises(ValidationError):
        InferenceSettings.model_validate({"gate_ocr": {"det_size": 640}})
    with pytest.raises(ValidationError):
        InferenceSettings.model_validate({"gate_ocr": {"runtime": {"kind": "tensorrt"}}})


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((100, 100), np.uint8),  # grayscale
        np.zeros((100, 100, 4), np.uint8),  # BGRA
        np.zeros((100, 100, 3), np.float32),
        np.zeros((8, 100, 3), np.uint8),
        b"\xff\xd8 not decoded",
    ],
)
def test_tasks_reject_frames_that_are_not_bgr(models_dir: Path, frame: object) -> None:
    tasks, _ = build_tasks(InferenceSettings(), models_dir)
    for task in tasks.values():
        with pytest.raises(BadFrame):
            task.run(frame)  # type: ignore[arg-type]


def test_tasks_give_the_same_results_from_concurrent_threads(models_dir: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from appliance.sources.synthetic import SyntheticYardCamera

    tasks, _ = build_tasks(InferenceSettings(), models_dir)
    frames = [f.image_bgr for f in SyntheticYardCamera(seed=8).frames(4)]
    jobs = [(name, i) for name in tasks for i in range(len(frames))]
    sequential = {job: tasks[job[0]].run(frames[job[1]]).detections for job in jobs}
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = pool.map(lambda job: tasks[job[0]].run(frames[job[1]]).detections, jobs)
        parallel = dict(zip(jobs, results, strict=True))
    assert parallel == sequential
