"""The INT8 text detector, made offline from the FP32 file beside it.

``quantize_detector(models_dir)`` reads ``ch_PP-OCRv4_det_infer.onnx`` (the
pinned file or a retrained one of that name), converts it to opset 13 and
quantizes its Conv nodes statically (QDQ, per-channel int8 weights, uint8 activations,
Percentile calibration) on detector inputs of synthetic camera frames whose
seed is not the evaluation set's.  It writes ``DET_INT8_MODEL`` and, beside
it, ``DET_INT8_RECORD``: the source's and the result's sha256, the recipe and
the library versions.  Nothing is downloaded.

``int8_detector_path(models_dir)`` returns the file only when the record
names the sha256 of the FP32 file beside it and the file's own bytes, so a
stale, altered or mismatched file is never loaded.  Quantizing needs the
``onnx`` package (dev extra: a build step, ``make models``); loading the result
needs only onnxruntime.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from contextlib import redirect_stdout
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from appliance.errors import ModelLoadError
from appliance.inference.derived_files import recorded_sha256, vouched_path, write_derived
from appliance.inference.text_detection import detection_input

__all__ = [
    "CALIBRATION_SEED",
    "DET_FP32_MODEL",
    "DET_INT8_MODEL",
    "DET_INT8_RECORD",
    "QuantizeError",
    "calibration_inputs",
    "int8_detector_path",
    "recorded_int8_sha256",
    "quantize_detector",
]

DET_FP32_MODEL = "ch_PP-OCRv4_det_infer.onnx"
DET_INT8_MODEL = "ch_PP-OCRv4_det_infer.int8.onnx"
DET_INT8_RECORD = "ch_PP-OCRv4_det_infer.int8.json"
CALIBRATION_SEED = 777  # camera frames for calibration; never the evaluation seed (20500)
CALIBRATION_FRAMES = 15  # per difficulty (clean, varied): 30 detector inputs
CALIBRATION_MAX_SIDE = 640  # the detector input size gate_ocr runs at by default
RECIPE = {
    "opset": 13,
    "format": "QDQ",
    "op_types": ["Conv"],
    "per_channel": True,
    "weights": "int8",
    "activations": "uint8",
    "calibration": "Percentile",
    "calibration_seed": CALIBRATION_SEED,
    "calibration_frames": 2 * CALIBRATION_FRAMES,
    "calibration_max_side": CALIBRATION_MAX_SIDE,
}


class QuantizeError(ModelLoadError):
    """The INT8 detector cannot be made (missing library, source file missing or not a
    model it can quantize); not retryable."""


def calibration_inputs(
    count: int = CALIBRATION_FRAMES, max_side: int = CALIBRATION_MAX_SIDE
) -> list[np.ndarray[Any, np.dtype[np.float32]]]:
    """Detector input tensors of ``count`` clean and ``count`` varied camera frames."""
    from appliance.sources.synthetic import SyntheticYardCamera

    tensors = []
    for difficulty in ("clean", "varied"):
        camera = SyntheticYardCamera(seed=CALIBRATION_SEED, difficulty=difficulty)
        tensors += [detection_input(f.image_bgr, max_side) for f in camera.frames(count)]
    return tensors


def recorded_int8_sha256(models_dir: Path) -> str | None:
    """The INT8 detector's sha256 as its record states it (no hashing: for a file that
    ``int8_detector_path`` already checked against that record)."""
    return recorded_sha256(models_dir / DET_INT8_RECORD)


def int8_detector_path(models_dir: Path) -> Path | None:
    """The INT8 detector in ``models_dir`` if its record vouches for it, else None."""
    return vouched_path(
        models_dir / DET_INT8_MODEL,
        models_dir / DET_INT8_RECORD,
        models_dir / DET_FP32_MODEL,
        RECIPE,
    )


def quantize_detector(models_dir: Path) -> Path:
    """Write the INT8 detector and its record into ``models_dir`` (kept when still valid)."""
    existing = int8_detector_path(models_dir)
    if existing is not None:
        return existing
    source = models_dir / DET_FP32_MODEL
    try:
        source_bytes = source.read_bytes()  # hashed and quantized: the same bytes
    except OSError as exc:
        raise QuantizeError(f"{source} cannot be read: {exc.strerror or exc}") from None
    try:
        import onnx
        from onnx import version_converter
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise QuantizeError(
            f"quantizing needs the 'onnx' package (dev extra, 'make models'): {exc}"
        ) from None

    inputs = calibration_inputs()

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._feeds = iter([{"x": tensor} for tensor in inputs])

        def get_next(self) -> dict[str, Any] | None:
            return next(self._feeds, None)

    # the calibrator prints its histogram settings to stdout: not ours to show
    with (
        tempfile.TemporaryDirectory(prefix="yardlink-quantize-") as tmp,
        redirect_stdout(io.StringIO()),
    ):
        opset13, prepared, output = (Path(tmp) / n for n in ("13.onnx", "pre.onnx", "int8.onnx"))
        try:
            model = onnx.load_model_from_string(source_bytes)
            onnx.save(version_converter.convert_version(model, 13), str(opset13))
            quant_pre_process(str(opset13), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(output),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv"],
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.Percentile,
            )
            data = output.read_bytes()
        except Exception as exc:  # noqa: BLE001 - protobuf's, onnx's, onnxruntime's own types
            raise QuantizeError(f"{source} cannot be quantized: {exc}") from None
    record = {
        "source": DET_FP32_MODEL,
        "source_sha256": hashlib.sha256(source_bytes).hexdigest(),
        "recipe": RECIPE,
        "versions": {p: metadata.version(p) for p in ("onnx", "onnxruntime", "numpy")},
    }
    try:
        return write_derived(
            models_dir / DET_INT8_MODEL, models_dir / DET_INT8_RECORD, data, record
        )
    except OSError as exc:
        raise QuantizeError(f"{models_dir / DET_INT8_MODEL} cannot be written: {exc}") from None
