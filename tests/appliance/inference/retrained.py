"""A "retrained" model for tests: a pinned ONNX file with one weight slightly changed, so
the same file name holds other bytes (and reads about the same)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from tests.appliance.inference.conftest import MODELS_DIR


def _weights(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The model's constant tensors: initializers and Constant nodes' values."""
    constants = [
        attribute.t
        for node in model.graph.node
        if node.op_type == "Constant"
        for attribute in node.attribute
        if attribute.name == "value"
    ]
    return [*model.graph.initializer, *constants]


def write_retrained(name: str, directory: Path) -> str:
    """Write ``directory / name``: the pinned ``name`` with the first element of its first
    float weight of more than one element changed by about 1%; its sha256."""
    model = onnx.load(str(MODELS_DIR / name))
    tensor = next(
        t
        for t in _weights(model)
        if t.data_type == onnx.TensorProto.FLOAT and numpy_helper.to_array(t).size > 1
    )
    changed = numpy_helper.to_array(tensor).copy()
    changed.flat[0] = changed.flat[0] * np.float32(1.01) + np.float32(1e-3)
    tensor.CopyFrom(numpy_helper.from_array(changed, tensor.name))
    data = model.SerializeToString()
    (directory / name).write_bytes(data)
    return hashlib.sha256(data).hexdigest()
