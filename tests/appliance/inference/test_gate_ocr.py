"""Real PP-OCR models on rendered frames from the synthetic yard camera."""

from __future__ import annotations

import numpy as np

from appliance.inference.gate_ocr import GateOcrTask
from appliance.sources.synthetic import SyntheticYardCamera

FRAMES = 20


def _score(task: GateOcrTask, difficulty: str) -> tuple[float, float, int]:
    camera = SyntheticYardCamera(seed=11, difficulty=difficulty)  # type: ignore[arg-type]
    codes_right = plates_right = plates = false_codes = 0
    for frame in camera.frames(FRAMES):
        result = task.run(frame.image_bgr)
        found = {(d.kind, d.value, d.valid) for d in result.detections}
        truth_codes = set()
        for truth in frame.truths:
            if truth.kind == "container_code":
                truth_codes.add(truth.value)
                codes_right += ("container_code", truth.value, truth.valid) in found
            else:
                plates += 1
                plates_right += ("plate", truth.value, True) in found
        false_codes += sum(1 for k, v, _ in found if k == "container_code" and v not in truth_codes)
    return codes_right / FRAMES, plates_right / max(plates, 1), false_codes


def test_clean_frames_are_read_and_check_digits_validated(gate_ocr: GateOcrTask) -> None:
    code_accuracy, plate_accuracy, false_codes = _score(gate_ocr, "clean")
    # measured 1.00 / 1.00 / 0 on this seed; floors leave room for runtime differences
    assert code_accuracy >= 0.85
    assert plate_accuracy >= 0.85
    assert false_codes <= 1


def test_varied_frames_mostly_read(gate_ocr: GateOcrTask) -> None:
    """Rotation up to 6 degrees, blur, noise, dim and bright lighting."""
    code_accuracy, plate_accuracy, false_codes = _score(gate_ocr, "varied")
    # measured 1.00 / 1.00 / 0 on this seed (0.78 on 40 frames of seed 5)
    assert code_accuracy >= 0.75
    assert plate_accuracy >= 0.8
    assert false_codes <= 2


def test_invalid_check_digit_is_reported_invalid(gate_ocr: GateOcrTask) -> None:
    camera = SyntheticYardCamera(seed=3, difficulty="clean", invalid_fraction=1.0)
    verdicts = []
    for frame in camera.frames(6):
        (truth,) = [t for t in frame.truths if t.kind == "container_code"]
        assert not truth.valid
        for detection in gate_ocr.run(frame.image_bgr).detections:
            if detection.kind == "container_code" and detection.value[:10] == truth.value[:10]:
                verdicts.append(detection.valid)
    assert len(verdicts) >= 4
    assert not any(verdicts)


def test_result_identifies_the_model_and_boxes_are_in_frame(gate_ocr: GateOcrTask) -> None:
    frame = SyntheticYardCamera(seed=5, difficulty="clean").frame(0)
    result = gate_ocr.run(frame.image_bgr)
    assert result.task == "gate_ocr" and result.model_name == "pp-ocrv4"
    assert result.model_version.startswith("1.4.4+det.")
    assert result.inference_ms > 0
    height, width = frame.image_bgr.shape[:2]
    for d in result.detections:
        x, y, w, h = d.box
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
        assert 0.0 < d.confidence <= 1.0


def test_blank_frame_has_no_detections(gate_ocr: GateOcrTask) -> None:
    result = gate_ocr.run(np.full((480, 640, 3), 128, np.uint8))
    assert result.detections == []


def test_owner_code_stacked_above_the_serial_is_joined(gate_ocr: GateOcrTask) -> None:
    """The door layout: ``MSCU`` on one line, ``123456 [7]`` below it."""
    camera = SyntheticYardCamera(seed=9, difficulty="clean", stacked_fraction=1.0)
    right = 0
    for frame in camera.frames(8):
        truth = frame.truths[0]
        found = {(d.kind, d.value, d.valid) for d in gate_ocr.run(frame.image_bgr).detections}
        right += ("container_code", truth.value, truth.valid) in found
    assert right >= 6  # measured 10/10 on this seed
