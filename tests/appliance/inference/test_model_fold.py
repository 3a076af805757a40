"""Folded model files: the pinned recognizer and the INT8 detector with their affine steps
and hardswish chains folded into their convolutions, made offline, vouched for by their
records, picked by ``folded_models``, and reading what the unfolded files read."""

from __future__ import annotations

import collections
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from appliance.errors import ModelLoadError
from appliance.inference.device import INT8_SIMD, device_class
from appliance.inference.gate_ocr import (
    DET_MODEL,
    REC_MODEL,
    detector_path,
    load_gate_ocr,
    recognizer_path,
)
from appliance.inference.model_fold import (
    DET_INT8_FOLD,
    FOLDS,
    REC_FOLD,
    FoldError,
    fold_graph,
    fold_model,
    folded_path,
)
from appliance.inference.quantize import DET_INT8_MODEL, DET_INT8_RECORD
from appliance.inference.settings import GateOcrSettings
from appliance.sources.synthetic import SyntheticYardCamera
from tests.appliance.inference.conftest import MODELS_DIR
from tests.appliance.inference.retrained import write_retrained


@pytest.fixture(scope="module")
def folded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("folded")
    for name in (DET_MODEL, REC_MODEL, DET_INT8_MODEL, DET_INT8_RECORD):
        shutil.copyfile(MODELS_DIR / name, models / name)
    for fold in FOLDS:
        fold_model(fold, models)
    return models


def _ops(path: Path) -> collections.Counter[str]:
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_make_models_left_folded_files_their_records_vouch_for() -> None:
    for fold in FOLDS:
        assert folded_path(fold, MODELS_DIR) == MODELS_DIR / fold.folded
    task = load_gate_ocr(GateOcrSettings(), MODELS_DIR / DET_MODEL, MODELS_DIR / REC_MODEL)
    assert task.rec.path == MODELS_DIR / REC_FOLD.folded  # the default loads it
    task.close()


def test_folding_leaves_fewer_passes_and_records_that_vouch_for_the_files(
    folded_dir: Path,
) -> None:
    for fold in FOLDS:
        folded = folded_dir / fold.folded
        assert folded_path(fold, folded_dir) == folded
        record = json.loads((folded_dir / fold.record).read_text())
        assert record["sha256"] == hashlib.sha256(folded.read_bytes()).hexdigest()
    pinned, ops = _ops(folded_dir / REC_MODEL), _ops(folded_dir / REC_FOLD.folded)
    assert pinned["Clip"] == 28 and pinned["Div"] == 33
    assert ops["Clip"] == 0 and ops["Div"] == 5  # the hardswish chains are gone
    assert ops["Conv"] == pinned["Conv"] == 38
    assert ops["Mul"] + ops["Add"] < (pinned["Mul"] + pinned["Add"]) / 2
    # the INT8 detector's weights sit behind DequantizeLinear: its hardswish chains go,
    # and each of its affine steps becomes one pass (BatchNormalization) instead of two
    int8, det_ops = _ops(folded_dir / DET_INT8_MODEL), _ops(folded_dir / DET_INT8_FOLD.folded)
    assert int8["Clip"] == 24 and det_ops["Clip"] == 0
    assert det_ops["Mul"] + det_ops["Add"] < (int8["Mul"] + int8["Add"]) / 2
    assert det_ops["BatchNormalization"] > 40
    assert det_ops["QuantizeLinear"] == int8["QuantizeLinear"]
    assert det_ops["Conv"] == int8["Conv"]


def test_the_folded_recognizer_reads_what_the_pinned_one_reads(folded_dir: Path) -> None:
    """Same detections (kind, value, check-digit verdict, box) on camera frames of a seed
    that is neither the evaluation's nor the calibration's, and the same recognition
    outputs up to float rounding on every recognition input those frames make."""
    pinned = load_gate_ocr(
        GateOcrSettings(det_model="int8", folded_models=False),
        folded_dir / DET_MODEL,
        folded_dir / REC_MODEL,
    )
    folded = load_gate_ocr(
        GateOcrSettings(det_model="int8"), folded_dir / DET_MODEL, folded_dir / REC_MODEL
    )
    assert (folded.rec.path.name, folded.det.path.name) == (
        REC_FOLD.folded,
        DET_INT8_FOLD.folded,
    )
    assert (pinned.rec.path.name, pinned.det.path.name) == (REC_MODEL, DET_INT8_MODEL)
    camera = SyntheticYardCamera(seed=4141, difficulty="varied")
    codes = 0
    for frame in camera.frames(6):
        ours, theirs = pinned.run(frame.image_bgr), folded.run(frame.image_bgr)
        assert _reads(theirs.detections) == _reads(ours.detections)
        for a, b in zip(ours.detections, theirs.detections, strict=True):
            assert b.confidence == pytest.approx(a.confidence, abs=1e-3)
        codes += sum(d.kind == "container_code" for d in ours.detections)
        for model, feeds in pinned.model_calls(frame.image_bgr):
            twin = folded.rec if model is pinned.rec else folded.det
            for w, g in zip(model.run(feeds).values(), twin.run(feeds).values(), strict=True):
                assert np.abs(w - g).max() < 1e-3
                if model is pinned.rec:
                    assert (w.argmax(-1) == g.argmax(-1)).all()
                else:
                    assert ((w > 0.3) == (g > 0.3)).all()  # the detector's text mask
    assert codes >= 4  # the frames had codes to read
    pinned.close()
    folded.close()


def _reads(detections: list[Any]) -> list[tuple[Any, ...]]:
    return sorted((d.kind, d.value, d.valid, tuple(d.box)) for d in detections)


def test_the_files_are_picked_by_folded_models(folded_dir: Path) -> None:
    rec, det = folded_dir / REC_MODEL, folded_dir / DET_MODEL
    assert recognizer_path(GateOcrSettings(), rec) == folded_dir / REC_FOLD.folded
    assert recognizer_path(GateOcrSettings(folded_models=False), rec) == rec
    det_int8 = GateOcrSettings(det_model="int8")
    assert detector_path(det_int8, det) == folded_dir / DET_INT8_FOLD.folded
    assert detector_path(det_int8.model_copy(update={"folded_models": False}), det) == (
        folded_dir / DET_INT8_MODEL
    )
    assert detector_path(GateOcrSettings(det_model="fp32"), det) == det
    int8_here = device_class()["simd"] in INT8_SIMD
    auto = detector_path(GateOcrSettings(), det)
    assert auto == (folded_dir / DET_INT8_FOLD.folded if int8_here else det)
    task = load_gate_ocr(det_int8, det, rec)
    sha = {f: json.loads((folded_dir / f.record).read_text())["sha256"][:8] for f in FOLDS}
    assert task.model_version.endswith(
        f"+det.{sha[DET_INT8_FOLD]}-int8-folded.rec.{sha[REC_FOLD]}-folded"
    )
    task.close()


def test_an_altered_or_unrecorded_folded_file_is_not_used(tmp_path: Path, folded_dir: Path) -> None:
    for name in (REC_MODEL, REC_FOLD.folded, REC_FOLD.record):
        shutil.copyfile(folded_dir / name, tmp_path / name)
    assert folded_path(REC_FOLD, tmp_path) == tmp_path / REC_FOLD.folded
    data = bytearray((tmp_path / REC_FOLD.folded).read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / REC_FOLD.folded).write_bytes(bytes(data))
    assert folded_path(REC_FOLD, tmp_path) is None
    assert recognizer_path(GateOcrSettings(), tmp_path / REC_MODEL) == tmp_path / REC_MODEL
    (tmp_path / REC_FOLD.record).unlink()
    assert folded_path(REC_FOLD, tmp_path) is None


def test_a_folded_detector_needs_an_int8_source_its_record_vouches_for(
    tmp_path: Path, folded_dir: Path
) -> None:
    names = (DET_MODEL, DET_INT8_MODEL, DET_INT8_RECORD, DET_INT8_FOLD.folded, DET_INT8_FOLD.record)
    for name in names:
        shutil.copyfile(folded_dir / name, tmp_path / name)
    assert folded_path(DET_INT8_FOLD, tmp_path) == tmp_path / DET_INT8_FOLD.folded
    (tmp_path / DET_INT8_RECORD).unlink()  # the INT8 source no longer vouched for
    assert folded_path(DET_INT8_FOLD, tmp_path) is None
    with pytest.raises(ModelLoadError, match="does not match its record"):
        detector_path(GateOcrSettings(det_model="int8"), tmp_path / DET_MODEL)


def test_an_affine_step_with_no_conv_to_go_into_becomes_one_pass() -> None:
    x = np.random.default_rng(9).normal(scale=3.0, size=(1, 3, 5, 7)).astype(np.float32)
    nodes = [
        _scalar("s", -1.3),
        _scalar("t", 0.7),
        helper.make_node("Mul", ["x", "s"], ["m"]),
        helper.make_node("Add", ["t", "m"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "left",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 5, 7])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)
    want = _run(model, x)
    folded, counts = fold_graph(model)
    onnx.checker.check_model(folded)
    np.testing.assert_allclose(_run(folded, x), want, rtol=1e-6, atol=1e-6)
    assert counts == {"affine": 0, "hardswish": 0, "affine_passes": 1}
    ops = collections.Counter(n.op_type for n in folded.graph.node if n.op_type != "Constant")
    assert ops == {"BatchNormalization": 1, "Relu": 1}


def test_folding_again_gives_the_same_bytes_and_keeps_a_valid_file(
    tmp_path: Path, folded_dir: Path
) -> None:
    shutil.copyfile(folded_dir / REC_MODEL, tmp_path / REC_MODEL)
    fold_model(REC_FOLD, tmp_path)
    assert (tmp_path / REC_FOLD.folded).read_bytes() == (folded_dir / REC_FOLD.folded).read_bytes()
    before = (tmp_path / REC_FOLD.folded).stat().st_mtime_ns
    assert fold_model(REC_FOLD, tmp_path) == tmp_path / REC_FOLD.folded
    assert (tmp_path / REC_FOLD.folded).stat().st_mtime_ns == before


def test_a_missing_or_unvouched_source_or_not_a_model_is_a_fold_error(tmp_path: Path) -> None:
    for fold in FOLDS:
        with pytest.raises(FoldError, match="missing or not vouched for"):
            fold_model(fold, tmp_path)
    (tmp_path / REC_MODEL).write_bytes(b"not a recognizer")
    with pytest.raises(FoldError, match="cannot be folded"):
        fold_model(REC_FOLD, tmp_path)
    assert not (tmp_path / REC_FOLD.folded).exists()


def test_a_retrained_recognizer_is_folded_and_its_folded_file_picked(
    tmp_path: Path, folded_dir: Path
) -> None:
    """Same file name, other bytes: the folded file made from the pinned recognizer is not
    vouched for beside it; folding makes one whose record names this source, picked by
    ``recognizer_path``; its record rewritten to name another source is refused again."""
    for name in (REC_FOLD.folded, REC_FOLD.record):
        shutil.copyfile(folded_dir / name, tmp_path / name)
    retrained = write_retrained(REC_MODEL, tmp_path)
    assert folded_path(REC_FOLD, tmp_path) is None
    assert recognizer_path(GateOcrSettings(), tmp_path / REC_MODEL) == tmp_path / REC_MODEL
    made = fold_model(REC_FOLD, tmp_path)
    record = json.loads((tmp_path / REC_FOLD.record).read_text())
    assert record["source_sha256"] == retrained
    assert made.read_bytes() != (folded_dir / REC_FOLD.folded).read_bytes()
    assert recognizer_path(GateOcrSettings(), tmp_path / REC_MODEL) == made

    pinned = json.loads((folded_dir / REC_FOLD.record).read_text())["source_sha256"]
    (tmp_path / REC_FOLD.record).write_text(json.dumps({**record, "source_sha256": pinned}))
    assert folded_path(REC_FOLD, tmp_path) is None


def _scalar(name: str, value: float) -> onnx.NodeProto:
    tensor = numpy_helper.from_array(np.array([value], dtype=np.float32), name)
    return helper.make_node("Constant", [], [name], value=tensor)


def _lab_model() -> onnx.ModelProto:
    """conv (pads nothing) -> affine -> hardswish -> affine -> conv (pads 1) -> affine ->
    conv (pads nothing): of the affine before the padded conv only the scale can go
    into it (its border pads zeros), the shift stays before it."""
    rng = np.random.default_rng(7)
    weights = [
        numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)
        for name, shape in (
            ("w0", (4, 3, 1, 1)),
            ("b0", (4,)),
            ("w1", (4, 1, 3, 3)),
            ("w2", (2, 4, 1, 1)),
            ("b2", (2,)),
        )
    ]
    nodes = [
        _scalar("s0", 1.7),
        _scalar("t0", 0.4),
        _scalar("three", 3.0),
        _scalar("zero", 0.0),
        _scalar("six", 6.0),
        _scalar("s1", 0.3),
        _scalar("t1", -0.8),
        _scalar("s2", 2.1),
        _scalar("t2", 0.9),
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="conv0"),
        helper.make_node("Mul", ["s0", "c0"], ["m0"]),
        helper.make_node("Add", ["m0", "t0"], ["a0"]),
        helper.make_node("Add", ["a0", "three"], ["h0"]),
        helper.make_node("Clip", ["h0", "zero", "six"], ["h1"]),
        helper.make_node("Mul", ["a0", "h1"], ["h2"]),
        helper.make_node("Div", ["h2", "six"], ["hs"]),
        helper.make_node("Mul", ["s1", "hs"], ["m1"]),
        helper.make_node("Add", ["m1", "t1"], ["a1"]),
        helper.make_node("Conv", ["a1", "w1"], ["c1"], name="conv1", group=4, pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c1", "s2"], ["m2"]),
        helper.make_node("Add", ["m2", "t2"], ["a2"]),
        helper.make_node("Conv", ["a2", "w2", "b2"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes,
        "lab",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 9])],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=7)


def _run(model: onnx.ModelProto, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def test_fold_graph_keeps_the_function_and_leaves_one_add_before_the_padded_conv() -> None:
    x = np.random.default_rng(8).normal(scale=3.0, size=(1, 3, 6, 9)).astype(np.float32)
    want = _run(_lab_model(), x)
    folded, counts = fold_graph(_lab_model())
    onnx.checker.check_model(folded)
    got = _run(folded, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # borders included
    # conv0's output affine and the one between conv1 and conv2: folded; of the one
    # before conv1 (which pads) its scale, leaving Add(t1 / s1)
    assert counts == {"affine": 3, "hardswish": 1, "affine_passes": 0}
    ops = collections.Counter(n.op_type for n in folded.graph.node if n.op_type != "Constant")
    assert ops == {"Conv": 3, "Mul": 1, "Add": 1, "HardSigmoid": 1}
    (shift,) = [i for i in folded.graph.initializer if i.name == "conv1.shift"]
    assert float(numpy_helper.to_array(shift)) == pytest.approx(-0.8 / 0.3)
