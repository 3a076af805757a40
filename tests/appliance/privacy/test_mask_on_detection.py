"""Mask on detection, not on recognition: text the detector finds and the recognizer
cannot read is hidden all the same (``unread_text``), with the real PP-OCR models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.inference.gate_ocr import (
    DET_MODEL,
    REC_MODEL,
    UNREAD_TEXT,
    GateOcrTask,
    load_gate_ocr,
)
from appliance.inference.model_files import model_path
from appliance.inference.settings import GateOcrSettings
from appliance.inference.tasks import TASKS
from appliance.privacy.masking_check import MASKED_COVERAGE, covered_fraction
from appliance.sources.synthetic import SyntheticYardCamera

MODELS = Path(__file__).resolve().parents[3] / "models"


@pytest.fixture(scope="module")
def picky_ocr() -> Iterator[GateOcrTask]:
    """A recognizer whose every read falls below its confidence floor: nothing is read."""
    yield load_gate_ocr(
        GateOcrSettings(min_text_confidence=1.0),
        model_path(DET_MODEL, MODELS),
        model_path(REC_MODEL, MODELS),
    )


def test_a_plate_the_recognizer_cannot_read_is_still_hidden(picky_ocr: GateOcrTask) -> None:
    frame = SyntheticYardCamera(11, plate_probability=1.0, difficulty="clean").frame(0)
    result = picky_ocr.run(frame.image_bgr)
    assert {d.kind for d in result.detections} == {UNREAD_TEXT}  # nothing read
    assert all(d.value == "" for d in result.detections)  # no text leaves in the records
    hidden = TASKS.redaction_policy().hidden_kinds
    boxes = [d.box for d in result.detections if d.kind in hidden]
    plate = next(t for t in frame.truths if t.kind == "plate")
    assert covered_fraction(plate.box, boxes) >= MASKED_COVERAGE
