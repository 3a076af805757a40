"""``yardlink models eval-set`` and ``yardlink models validate`` on the real models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from appliance.inference.gate_ocr import DET_MODEL, REC_MODEL, detector_path
from appliance.inference.settings import GateOcrSettings
from appliance.inference.validation import device_class
from yardlink.cli import main

FRAMES = 4


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("eval")
    assert main(["models", "eval-set", str(directory), "--count", str(FRAMES), "--seed", "9"]) == 0
    return directory


def test_validate_writes_a_report_of_accuracy_latency_and_device(
    eval_dir: Path, models_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.json"
    code = main(
        ["models", "validate", str(models_dir), "--eval-set", str(eval_dir), "--out", str(out)]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["eval_set"]["frames"] == FRAMES and report["eval_set"]["seed"] == 9
    accuracy = report["accuracy"]
    assert accuracy["frames"] == FRAMES
    assert 0.0 <= accuracy["code_accuracy"] <= 1.0
    assert accuracy["code_accuracy"] >= 0.5  # the clean frame and most varied ones are read
    assert {"clean", "varied"} <= set(accuracy["by_group"])
    files = {f["name"]: f for f in report["model_set"]["files"]}
    assert files[DET_MODEL]["pinned_sha256_matches"] is True
    assert files[REC_MODEL]["pinned_sha256_matches"] is True
    detector = detector_path(GateOcrSettings(), models_dir / DET_MODEL)
    assert report["model_set"]["detector"] == detector.name  # INT8 where the class takes it
    assert detector.name in files
    wall = report["latency_ms"]["wall"]
    assert 0 < wall["p50"] <= wall["p99"]
    assert report["peak_rss_mib"]["peak"] > 0
    assert report["device"]["class"] == device_class()["class"]
    assert "onnxruntime" in report["runtimes"]
    assert "source" in report["energy"]


def test_a_candidate_set_runs_with_its_own_settings(
    eval_dir: Path, models_dir: Path, tmp_path: Path
) -> None:
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    for name in (DET_MODEL, REC_MODEL):
        shutil.copy(models_dir / name, candidate / name)
    (candidate / "gate_ocr.toml").write_text("[gate_ocr]\ndet_max_side = 480\n")
    out = tmp_path / "report.json"
    args = ["models", "validate", str(candidate), "--eval-set", str(eval_dir), "--out", str(out)]
    assert main([*args, "--limit", "1"]) == 0
    report = json.loads(out.read_text())
    assert report["model_set"]["settings"]["det_max_side"] == 480
    assert report["eval_set"]["frames"] == 1


def test_bad_inputs_are_one_line_errors(
    eval_dir: Path, models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "r.json")
    assert (
        main(["models", "validate", str(tmp_path), "--eval-set", str(eval_dir), "--out", out]) == 2
    )
    assert f"has no {DET_MODEL}" in capsys.readouterr().err
    missing = str(tmp_path / "nothing")
    assert main(["models", "validate", str(models_dir), "--eval-set", missing, "--out", out]) == 2
    assert "is not an evaluation set" in capsys.readouterr().err
    settings = tmp_path / "bad.toml"
    settings.write_text("[gate_ocr]\ndet_max_side = 5\n")
    args = ["models", "validate", str(models_dir), "--eval-set", str(eval_dir), "--out", out]
    assert main([*args, "--settings", str(settings)]) == 2
    assert "det_max_side" in capsys.readouterr().err
