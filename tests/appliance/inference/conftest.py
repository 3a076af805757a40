"""Real models, loaded once per test module (loading and warming up takes a moment)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.inference.face_anonymize import FACE_MODEL, FaceAnonymizeTask, load_face_anonymize
from appliance.inference.gate_ocr import DET_MODEL, REC_MODEL, GateOcrTask, load_gate_ocr
from appliance.inference.model_files import model_path
from appliance.inference.settings import FaceAnonymizeSettings, GateOcrSettings

MODELS_DIR = Path(__file__).resolve().parents[3] / "models"


@pytest.fixture(scope="module")
def models_dir() -> Path:
    return MODELS_DIR


@pytest.fixture(scope="module")
def gate_ocr() -> Iterator[GateOcrTask]:
    yield load_gate_ocr(
        GateOcrSettings(),
        model_path(DET_MODEL, MODELS_DIR),
        model_path(REC_MODEL, MODELS_DIR),
    )


@pytest.fixture(scope="module")
def face_task() -> Iterator[FaceAnonymizeTask]:
    task = load_face_anonymize(FaceAnonymizeSettings(), model_path(FACE_MODEL, MODELS_DIR))
    yield task
    task.close()
