"""``yardlink models validate``: what a gate OCR model set costs and gains on this device.

Runs a candidate model set (a directory with the PP-OCR det and rec files,
and optionally the gate_ocr settings it is meant to run with) against a
labelled evaluation set (``appliance.inference.eval_set``) on the machine it
runs on, and writes one JSON report: accuracy (overall and per difficulty
group), p50/p99 latency per frame (JPEG decode + ``GateOcrTask.run``, wall and
process CPU time), frames/s, peak RSS, energy per frame where the machine
exposes RAPL, and the device class and runtime versions.  The report goes
into a model release so an operator sees, per device class, what a release
costs before rolling it out (docs/INFERENCE.md).

``yardlink models eval-set DIR --count 500`` writes the evaluation set;
``yardlink models quantize [MODELS_DIR]`` makes the INT8 detector
(``appliance.inference.quantize``) and the folded recognizer and INT8 detector
(``appliance.inference.model_fold``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import resource
import sys
import time
import tomllib
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import ValidationError

from appliance.errors import ApplianceError
from appliance.inference.device import device_class
from appliance.inference.eval_set import EVAL_SEED, load_eval_set, write_eval_set
from appliance.inference.gate_ocr import DET_MODEL, REC_MODEL, load_gate_ocr
from appliance.inference.model_files import MODEL_FILES
from appliance.inference.model_fold import FOLDS, FoldError, fold_model
from appliance.inference.ocr_accuracy import FrameScore, OcrScore, score_frame
from appliance.inference.quantize import DET_INT8_RECORD, QuantizeError, quantize_detector
from appliance.inference.settings import GateOcrSettings
from appliance.privacy.tokens import PlateTokenizer
from sync.shared.durable_file import replace_durably

__all__ = ["ValidationFailed", "add_validate_commands", "device_class", "validate_model_set"]

REPORT_FORMAT = 1
SETTINGS_FILE = "gate_ocr.toml"  # optional, in MODEL_DIR: the [gate_ocr] settings to run with
_RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")


class ValidationFailed(ApplianceError):
    """The model set or its settings cannot be validated (not retryable)."""


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "opencv": str(cv2.__version__)}
    for package in ("onnxruntime", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _file_entry(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    pinned = next((m for m in MODEL_FILES if m.name == path.name), None)
    return {
        "name": path.name,
        "bytes": path.stat().st_size,
        "sha256": digest,
        "pinned_sha256_matches": None if pinned is None else pinned.sha256 == digest,
    }


def _settings(model_dir: Path, settings_file: Path | None) -> GateOcrSettings:
    path = settings_file or model_dir / SETTINGS_FILE
    if settings_file is None and not path.is_file():
        return GateOcrSettings()
    try:
        data = tomllib.loads(path.read_text())
        return GateOcrSettings(**data.get("gate_ocr", data))
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ValidationFailed(f"gate_ocr settings {path}: {exc}") from None


def _energy_uj() -> int | None:
    try:
        return int(_RAPL.read_text())
    except (OSError, ValueError):
        return None


def _percentiles(samples: list[float]) -> dict[str, float]:
    array = np.asarray(samples) if samples else np.zeros(1)
    return {
        "p50": round(float(np.percentile(array, 50)), 3),
        "p99": round(float(np.percentile(array, 99)), 3),
    }


def validate_model_set(
    model_dir: Path,
    eval_dir: Path,
    *,
    settings_file: Path | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Run the model set on the evaluation set here; the report as a JSON-able dict."""
    det_path, rec_path = model_dir / DET_MODEL, model_dir / REC_MODEL
    for path in (det_path, rec_path):
        if not path.is_file():
            raise ValidationFailed(f"{model_dir} has no {path.name}")
    settings = _settings(model_dir, settings_file)
    eval_set = load_eval_set(eval_dir)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    task = load_gate_ocr(settings, det_path, rec_path)
    tokenizer = PlateTokenizer(hashlib.sha256(b"validation").digest())
    score = OcrScore()
    wall: list[float] = []
    cpu: list[float] = []
    energy_start, run_start = _energy_uj(), time.perf_counter()
    frames = 0
    for frame, jpeg in eval_set.jpegs():
        if limit is not None and frames >= limit:
            break
        started, cpu_started = time.perf_counter(), time.process_time()
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValidationFailed(f"{eval_dir}/{frame.file} is not a decodable JPEG")
        result = task.run(image)
        wall.append((time.perf_counter() - started) * 1000.0)
        cpu.append((time.process_time() - cpu_started) * 1000.0)
        code_read, plate_read, false_codes = score_frame(frame, result, tokenizer)
        score.add(
            frame,
            FrameScore(frame.index, code_read, plate_read, false_codes, wall[-1], cpu[-1]),
        )
        frames += 1
    elapsed = time.perf_counter() - run_start
    energy_end = _energy_uj()
    summary = score.summary()
    energy: dict[str, Any] = {"source": "unavailable (no readable RAPL counter)"}
    if energy_start is not None and energy_end is not None and frames:
        joules = (energy_end - energy_start) / 1e6
        energy = {"source": f"RAPL {_RAPL} (whole package)", "joules_per_frame": joules / frames}
    return {
        "report_format": REPORT_FORMAT,
        "task": "gate_ocr",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": device_class(),
        "runtimes": _versions(),
        "model_set": {
            "dir": str(model_dir),
            "files": [
                _file_entry(p)
                for p in dict.fromkeys((det_path, task.det.path, rec_path, task.rec.path))
            ],
            "detector": task.det.path.name,  # the FP32 file or its INT8 sibling (det_model)
            "recognizer": task.rec.path.name,  # the pinned file or its folded sibling
            "model_version": task.model_version,
            "settings": settings.model_dump(mode="json"),
        },
        "eval_set": {
            "dir": str(eval_dir),
            "seed": eval_set.seed,
            "frames": frames,
            "labels_sha256": eval_set.labels_sha256,
        },
        "accuracy": {k: v for k, v in summary.items() if k not in ("wall_ms", "cpu_ms")},
        "latency_ms": {
            "measured": "JPEG decode + GateOcrTask.run per frame, one thread feeding",
            "wall": _percentiles(wall),
            "process_cpu": _percentiles(cpu),
        },
        "frames_per_s": frames / elapsed if elapsed else 0.0,
        "peak_rss_mib": {
            "before_models": rss_before,
            "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        },
        "energy": energy,
    }


def _validate(args: argparse.Namespace) -> int:
    report = validate_model_set(
        args.model_dir, args.eval_set, settings_file=args.settings, limit=args.limit
    )
    data = (json.dumps(report, indent=2) + "\n").encode()
    try:
        replace_durably(args.out, data)
    except OSError as exc:
        raise ValidationFailed(f"cannot write {args.out}: {exc}") from None
    accuracy, latency = report["accuracy"], report["latency_ms"]["wall"]
    print(
        f"{report['device']['class']}: codes {accuracy['code_accuracy']:.3f}, plates "
        f"{accuracy['plate_accuracy']:.3f} on {report['eval_set']['frames']} frames; "
        f"p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms -> {args.out}"
    )
    return 0


def _eval_set(args: argparse.Namespace) -> int:
    written = write_eval_set(args.directory, args.count, args.seed)
    print(f"{len(written)} frames, seed {written.seed} -> {args.directory}")
    return 0


def _quantize(args: argparse.Namespace) -> int:
    try:
        paths = [quantize_detector(args.models_dir)]
        paths += [fold_model(fold, args.models_dir) for fold in FOLDS]
    except (QuantizeError, FoldError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    records = (DET_INT8_RECORD, *(fold.record for fold in FOLDS))
    for path, record_name in zip(paths, records, strict=True):
        record = json.loads((args.models_dir / record_name).read_text())
        print(f"{path}: sha256 {record['sha256']} (from {record['source']})")
    return 0


def add_validate_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``validate``, ``eval-set`` and ``quantize`` under ``yardlink models``."""
    quantize = commands.add_parser(
        "quantize",
        help="make the INT8 text detector and the folded detector and recognizer from the "
        "det/rec files in MODELS_DIR (the pinned ones: make models), offline",
    )
    quantize.add_argument("models_dir", type=Path, nargs="?", default=Path("models"))
    quantize.set_defaults(handler=_quantize)

    validate = commands.add_parser(
        "validate", help="accuracy, latency, RSS and energy of a gate OCR model set on this device"
    )
    validate.add_argument("model_dir", type=Path, help="directory with the det and rec files")
    validate.add_argument("--eval-set", type=Path, required=True, help="see `models eval-set`")
    validate.add_argument("--out", type=Path, required=True, help="the JSON report")
    validate.add_argument(
        "--settings", type=Path, help=f"gate_ocr settings TOML (default: MODEL_DIR/{SETTINGS_FILE})"
    )
    validate.add_argument("--limit", type=int, help="only the first N frames (a quick look)")
    validate.set_defaults(handler=_validate)

    eval_set = commands.add_parser("eval-set", help="write the labelled gate OCR evaluation set")
    eval_set.add_argument("directory", type=Path)
    eval_set.add_argument("--count", type=int, default=500)
    eval_set.add_argument("--seed", type=int, default=EVAL_SEED)
    eval_set.set_defaults(handler=_eval_set)
