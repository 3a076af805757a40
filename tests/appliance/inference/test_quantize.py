"""The INT8 text detector: made offline from the FP32 file beside it (pinned or retrained),
vouched for by its record,
picked per device class, and reading as well as FP32 on a fixed evaluation subset."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from appliance.errors import ModelLoadError
from appliance.inference.device import INT8_SIMD, device_class
from appliance.inference.eval_set import EVAL_SEED, load_eval_set, write_eval_set
from appliance.inference.gate_ocr import (
    DET_MODEL,
    REC_MODEL,
    _model_version,
    detector_path,
    load_gate_ocr,
)
from appliance.inference.ocr_accuracy import score_task
from appliance.inference.quantize import (
    DET_INT8_MODEL,
    DET_INT8_RECORD,
    QuantizeError,
    int8_detector_path,
    quantize_detector,
)
from appliance.inference.settings import GateOcrSettings
from tests.appliance.inference.conftest import MODELS_DIR
from tests.appliance.inference.retrained import write_retrained

INT8 = MODELS_DIR / DET_INT8_MODEL


def _copy_set(tmp_path: Path, *names: str) -> Path:
    for name in names:
        shutil.copyfile(MODELS_DIR / name, tmp_path / name)
    return tmp_path


def test_make_models_left_an_int8_detector_its_record_vouches_for() -> None:
    assert int8_detector_path(MODELS_DIR) == INT8
    record = json.loads((MODELS_DIR / DET_INT8_RECORD).read_text())
    assert record["sha256"] == hashlib.sha256(INT8.read_bytes()).hexdigest()
    assert record["recipe"]["calibration_seed"] != EVAL_SEED  # never calibrated on the eval set
    assert INT8.stat().st_size < (MODELS_DIR / DET_MODEL).stat().st_size / 2


def test_an_altered_or_unrecorded_int8_file_is_not_used(tmp_path: Path) -> None:
    models = _copy_set(tmp_path, DET_MODEL, DET_INT8_MODEL, DET_INT8_RECORD)
    assert int8_detector_path(models) == models / DET_INT8_MODEL
    data = bytearray((models / DET_INT8_MODEL).read_bytes())
    data[-1] ^= 0xFF
    (models / DET_INT8_MODEL).write_bytes(bytes(data))
    assert int8_detector_path(models) is None
    with pytest.raises(ModelLoadError, match="does not match its record"):
        detector_path(GateOcrSettings(det_model="int8"), models / DET_MODEL)
    assert detector_path(GateOcrSettings(), models / DET_MODEL) == models / DET_MODEL  # auto
    (models / DET_INT8_RECORD).unlink()
    assert int8_detector_path(models) is None


def test_the_detector_is_picked_per_device_class() -> None:
    fp32 = MODELS_DIR / DET_MODEL
    unfolded = GateOcrSettings(folded_models=False)  # the folded files: test_model_fold.py
    assert detector_path(GateOcrSettings(det_model="fp32"), fp32) == fp32
    int8 = unfolded.model_copy(update={"det_model": "int8"})
    assert detector_path(int8, fp32) == INT8
    int8_here = device_class()["simd"] in INT8_SIMD
    assert detector_path(unfolded, fp32) == (INT8 if int8_here else fp32)
    task = load_gate_ocr(int8, fp32, MODELS_DIR / REC_MODEL)
    assert task.det.path == INT8 and "-int8.rec." in task.model_version


def test_the_int8_version_comes_from_the_record_checked_at_load(tmp_path: Path) -> None:
    """The INT8 file is hashed once, when its record is checked, not again for the
    version: bytes changed after the load do not change the version the task reports."""
    models = _copy_set(tmp_path, DET_MODEL, DET_INT8_MODEL, DET_INT8_RECORD, REC_MODEL)
    task = load_gate_ocr(GateOcrSettings(det_model="int8"), models / DET_MODEL, models / REC_MODEL)
    recorded = json.loads((models / DET_INT8_RECORD).read_text())["sha256"]
    assert f"+det.{recorded[:8]}-int8.rec." in task.model_version
    (models / DET_INT8_MODEL).write_bytes(b"changed after the load")
    assert _model_version(models / DET_INT8_MODEL) == task.model_version


def test_a_missing_source_or_one_that_is_not_a_model_is_a_quantize_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(QuantizeError, match="cannot be read"):
        quantize_detector(tmp_path)
    (tmp_path / DET_MODEL).write_bytes(b"not a detector")
    with pytest.raises(QuantizeError, match="cannot be quantized"):
        quantize_detector(tmp_path)
    assert not (tmp_path / DET_INT8_MODEL).exists()


def test_a_retrained_detector_is_quantized_and_its_int8_file_loaded(tmp_path: Path) -> None:
    """Same file name, other bytes: the pinned INT8 file beside it is not vouched for (its
    record names the pinned source); quantizing makes one whose record names this source,
    gate_ocr loads it; its record rewritten to name another source is refused again."""
    models = _copy_set(tmp_path, DET_INT8_MODEL, DET_INT8_RECORD, REC_MODEL)
    retrained = write_retrained(DET_MODEL, models)
    assert int8_detector_path(models) is None
    (models / DET_INT8_RECORD).unlink()  # a stale INT8 file is made again, not kept
    made = quantize_detector(models)
    record = json.loads((models / DET_INT8_RECORD).read_text())
    assert record["source_sha256"] == retrained
    assert record["sha256"] == hashlib.sha256(made.read_bytes()).hexdigest()
    assert made.read_bytes() != INT8.read_bytes()
    assert int8_detector_path(models) == made
    settings = GateOcrSettings(det_model="int8", folded_models=False)
    task = load_gate_ocr(settings, models / DET_MODEL, models / REC_MODEL)
    assert task.det.path == made and f"+det.{record['sha256'][:8]}-int8." in task.model_version

    pinned = json.loads((MODELS_DIR / DET_INT8_RECORD).read_text())["source_sha256"]
    (models / DET_INT8_RECORD).write_text(json.dumps({**record, "source_sha256": pinned}))
    assert int8_detector_path(models) is None
    with pytest.raises(ModelLoadError, match="does not match its record"):
        detector_path(settings, models / DET_MODEL)


def test_the_int8_detector_reads_codes_and_plates_as_well_as_fp32(tmp_path: Path) -> None:
    eval_set = load_eval_set(write_eval_set(tmp_path / "eval", 24, EVAL_SEED).directory)
    scores: dict[str, dict[str, float]] = {}
    for precision in ("fp32", "int8"):
        settings = GateOcrSettings(det_model=precision)
        task = load_gate_ocr(settings, MODELS_DIR / DET_MODEL, MODELS_DIR / REC_MODEL)
        scores[precision] = score_task(task.run, eval_set).summary()
    assert scores["int8"]["code_accuracy"] >= scores["fp32"]["code_accuracy"] >= 22 / 24
    assert scores["int8"]["plate_accuracy"] >= scores["fp32"]["plate_accuracy"]
    assert scores["int8"]["false_codes"] == 0


@pytest.mark.slow
def test_quantizing_again_gives_the_same_bytes(tmp_path: Path) -> None:
    models = _copy_set(tmp_path, DET_MODEL)
    made = quantize_detector(models)
    assert made.read_bytes() == INT8.read_bytes()
    assert (models / DET_INT8_RECORD).read_text() == (MODELS_DIR / DET_INT8_RECORD).read_text()
