from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from appliance.errors import ModelLoadError, RuntimeUnavailable
from appliance.inference.runtimes import (
    RUNTIMES,
    LiteRtConfig,
    OnnxModel,
    OnnxRuntimeConfig,
    available_runtimes,
    load_model,
)


def test_both_runtimes_are_registered_and_available_here() -> None:
    assert set(RUNTIMES) >= {"onnxruntime", "litert"}
    report = available_runtimes()
    assert report["onnxruntime"] == "onnxruntime"
    assert report["litert"] in {"ai_edge_litert", "tflite_runtime"}


def test_configs_forbid_unknown_options() -> None:
    with pytest.raises(ValidationError):
        OnnxRuntimeConfig.model_validate({"intra_op_thread": 2})
    with pytest.raises(ValidationError):
        LiteRtConfig.model_validate({"threads": 2})


def test_onnx_model_loads_warms_up_and_runs(models_dir: Path) -> None:
    model = load_model(
        OnnxRuntimeConfig(intra_op_threads=1),
        models_dir / "ch_PP-OCRv4_det_infer.onnx",
        {"x": (1, 3, 32, 32)},
    )
    assert model.warmup_ms > 0
    outputs = model.run({"x": np.zeros((1, 3, 64, 96), np.float32)})
    (probability,) = outputs.values()
    assert probability.shape == (1, 1, 64, 96)


def test_onnx_threads_can_sleep_instead_of_spinning(models_dir: Path) -> None:
    path = models_dir / "ch_PP-OCRv4_det_infer.onnx"
    key = "session.intra_op.allow_spinning"
    for allow in (False, True):
        config = OnnxRuntimeConfig(intra_op_threads=2, allow_spinning=allow)
        model = load_model(config, path, {"x": (1, 3, 32, 32)})
        assert isinstance(model, OnnxModel)
        options = model.session.get_session_options()
        if allow:  # ORT's default: the entry is not set at all
            with pytest.raises(RuntimeError, match="does not have configuration"):
                options.get_session_config_entry(key)
        else:
            assert options.get_session_config_entry(key) == "0"
        (probability,) = model.run({"x": np.zeros((1, 3, 64, 96), np.float32)}).values()
        assert probability.shape == (1, 1, 64, 96)


def test_litert_model_loads_warms_up_and_runs(models_dir: Path) -> None:
    model = load_model(LiteRtConfig(), models_dir / "face_detection_short_range.tflite")
    assert model.inputs[0].shape == (1, 128, 128, 3)
    outputs = model.run({model.inputs[0].name: np.zeros((1, 128, 128, 3), np.float32)})
    assert sorted(a.shape for a in outputs.values()) == [(1, 896, 1), (1, 896, 16)]


@pytest.mark.parametrize(
    ("config", "name"),
    [(OnnxRuntimeConfig(), "bad.onnx"), (LiteRtConfig(), "bad.tflite")],
)
def test_wrong_bytes_are_a_model_load_error(tmp_path: Path, config, name: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / name
    path.write_bytes(b"this is not a model" * 100)
    with pytest.raises(ModelLoadError, match=str(path)):
        load_model(config, path)


def test_missing_file_is_a_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(OnnxRuntimeConfig(), tmp_path / "absent.onnx")


def test_dynamic_input_without_warmup_shape_is_a_model_load_error(models_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="warm-up shape"):
        load_model(OnnxRuntimeConfig(), models_dir / "ch_PP-OCRv4_det_infer.onnx")


def test_missing_library_is_runtime_unavailable(models_dir: Path) -> None:
    # tflite-runtime is really not installed in this environment (ai-edge-litert is).
    with pytest.raises(RuntimeUnavailable, match="tflite_runtime"):
        load_model(
            LiteRtConfig(library="tflite-runtime"),
            models_dir / "face_detection_short_range.tflite",
        )


def test_missing_execution_provider_is_runtime_unavailable(models_dir: Path) -> None:
    with pytest.raises(RuntimeUnavailable, match="TensorrtExecutionProvider"):
        load_model(
            OnnxRuntimeConfig(providers=["TensorrtExecutionProvider"]),
            models_dir / "ch_PP-OCRv4_det_infer.onnx",
            {"x": (1, 3, 32, 32)},
        )
