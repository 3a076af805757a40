"""Model files with their scalar affine steps and hardswish chains folded, made offline.

PP-OCRv4's models (PP-LCNetV3 backbones) wrap every convolution in "learnable
affine blocks": ``Conv -> Mul(s) -> Add(b) -> hardswish -> Mul(s2) -> Add(b2) ->
Conv``, the hardswish spelled out as ``x * Clip(x + 3, 0, 6) / 6``.  ONNX Runtime
runs each of those steps as its own pass over the feature map (about a third of a
recognition call's CPU).  ``fold_graph`` rewrites a graph to the same function
with fewer passes:

* an affine step right after a convolution goes into its weights and bias
  (``s*(W*x + B) + b = (s*W)*x + (s*B + b)``);
* an affine step right before a convolution that pads nothing goes into it too
  (``W*(s*x + b) + B = (s*W)*x + (B + b*sum(W))``); before a padded one only its
  scale does (the border pads zeros: ``W*pad(s*x + b) = (s*W)*pad(x + b/s)``),
  leaving one ``Add(b/s)`` pass instead of two;
* the spelled-out hardswish becomes ``x * HardSigmoid(x)``, which ONNX Runtime
  fuses into the convolution before it (or runs as one pass);
* an affine step left over (no convolution to go into, e.g. after the INT8
  detector's DequantizeLinear) becomes one ``BatchNormalization`` pass with mean
  0, variance 1 and epsilon 0, which computes ``s*x + b`` in one go.

Only float weights given as constants are folded, so on the INT8 detector
(weights behind DequantizeLinear) only the hardswish chains change.  The result
computes the same function up to float rounding.  Two files are folded
(``FOLDS``): the recognizer (``REC_FOLD``, pinned or retrained) and the INT8
detector (``DET_INT8_FOLD``, only when its own record vouches for it).
``fold_model`` writes the folded file and beside it a record (source and result
sha256, recipe, library versions); ``folded_path`` returns the file only when
that record matches the file's bytes and the sha256 of the source beside it.  Folding
needs the ``onnx`` package (dev extra: a build step, ``make models``); loading
the result needs only onnxruntime.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from appliance.errors import ModelLoadError
from appliance.inference.derived_files import recorded_sha256, vouched_path, write_derived
from appliance.inference.quantize import DET_INT8_MODEL, int8_detector_path

if TYPE_CHECKING:
    import onnx

__all__ = [
    "DET_INT8_FOLD",
    "FOLDS",
    "REC_FOLD",
    "REC_SOURCE",
    "Fold",
    "FoldError",
    "fold_graph",
    "fold_model",
    "folded_path",
    "recorded_folded_sha256",
]

RECIPE = {
    "affine_after_conv": "into the conv's weights and bias",
    "affine_before_unpadded_conv": "into the conv's weights and bias",
    "affine_before_padded_conv": "scale into the conv's weights, b/s added before it",
    "hardswish": "x * HardSigmoid(alpha=1/6, beta=0.5)",
    "affine_left": "one BatchNormalization pass (mean 0, var 1, epsilon 0)",
}


class FoldError(ModelLoadError):
    """A folded file cannot be made (missing library, source file missing, not vouched for
    or not a model it can fold); not retryable."""


class _Graph:
    """The nodes of a model's graph with who produces and who reads each tensor."""

    def __init__(self, model: onnx.ModelProto) -> None:
        from onnx import numpy_helper

        graph = model.graph
        self.constants: dict[str, np.ndarray[Any, Any]] = {
            i.name: numpy_helper.to_array(i) for i in graph.initializer
        }
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.nodes = [n for n in graph.node if n.op_type != "Constant"]
        self.readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                self.readers[name].append(node)
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.outputs = {o.name for o in graph.output}

    def scalar(self, name: str) -> float | None:
        value = self.constants.get(name)
        return None if value is None or value.size != 1 else float(value.reshape(()))

    def only_reader(self, tensor: str, op_type: str) -> onnx.NodeProto | None:
        readers = self.readers[tensor]
        if tensor in self.outputs or len(readers) != 1 or readers[0].op_type != op_type:
            return None
        return readers[0]

    def scalar_operand(self, node: onnx.NodeProto, tensor: str) -> float | None:
        """The scalar constant ``node`` combines ``tensor`` with, if that is its other input."""
        others = [i for i in node.input if i != tensor]
        return self.scalar(others[0]) if len(others) == 1 and len(node.input) == 2 else None


def _affine_after(graph: _Graph, tensor: str) -> tuple[list[Any], float, float, str] | None:
    """``tensor -> Mul(s) -> Add(b)`` read by nothing else: (nodes, s, b, result name)."""
    mul = graph.only_reader(tensor, "Mul")
    scale = None if mul is None else graph.scalar_operand(mul, tensor)
    if mul is None or scale is None:
        return None
    add = graph.only_reader(mul.output[0], "Add")
    shift = None if add is None else graph.scalar_operand(add, mul.output[0])
    if add is None or shift is None:
        return None
    return [mul, add], scale, shift, add.output[0]


def _pads_nothing(conv: onnx.NodeProto) -> bool:
    for attribute in conv.attribute:
        if attribute.name == "pads" and any(attribute.ints):
            return False
        if attribute.name == "auto_pad" and attribute.s not in (b"NOTSET", b"VALID"):
            return False
    return True


def _conv_weights(graph: _Graph, conv: onnx.NodeProto) -> tuple[Any, Any] | None:
    weights = graph.constants.get(conv.input[1])
    if weights is None or weights.dtype != np.float32:
        return None
    bias = graph.constants.get(conv.input[2]) if len(conv.input) > 2 else None
    if len(conv.input) > 2 and bias is None:
        return None
    w = weights.astype(np.float64)
    b = np.zeros(w.shape[0]) if bias is None else bias.astype(np.float64)
    return w, b


def _affine_before(
    graph: _Graph, conv: onnx.NodeProto, removed: set[int]
) -> tuple[list[Any], float, float, str] | None:
    """``a -> Mul(s) -> Add(b) -> conv``: (nodes, s, b, a)."""
    add = graph.producer.get(conv.input[0])
    if add is None or add.op_type != "Add" or id(add) in removed:
        return None
    if graph.only_reader(add.output[0], "Conv") is not conv:
        return None
    mul = next((graph.producer[i] for i in add.input if i in graph.producer), None)
    if mul is None or mul.op_type != "Mul":
        return None
    sources = [i for i in mul.input if graph.scalar(i) is None]
    found = _affine_after(graph, sources[0]) if len(sources) == 1 else None
    if found is None or found[3] != conv.input[0]:
        return None
    return found[0], found[1], found[2], sources[0]


def _fold_affine(
    graph: _Graph, removed: set[int]
) -> tuple[dict[str, tuple[Any, Any]], dict[str, tuple[str, float]], int]:
    """New (weights, bias) per conv name with the affine steps around it folded in, and
    per padded conv whose input's scale went into its weights the shift left before it
    (the tensor it is added to, ``b / s``)."""
    folded: dict[str, tuple[Any, Any]] = {}
    shifts: dict[str, tuple[str, float]] = {}
    count = 0
    for conv in graph.nodes:
        if conv.op_type != "Conv" or not conv.name:
            continue
        found = _conv_weights(graph, conv)
        if found is None:
            continue
        w, b = found
        before = _affine_before(graph, conv, removed)
        if before is not None and (_pads_nothing(conv) or before[1] != 0.0):
            nodes, scale, shift, source = before
            if _pads_nothing(conv):
                b = b + shift * w.reshape(w.shape[0], -1).sum(axis=1)
                conv.input[0] = source
            else:  # the border pads zeros: W * pad(s*a + b) = (s*W) * pad(a + b/s)
                shifts[conv.name] = (source, shift / scale)
            w = w * scale
            removed.update(id(n) for n in nodes)
            count += 1
        else:
            before = None
        after = _affine_after(graph, conv.output[0])
        if after is not None and removed & {id(n) for n in after[0]}:
            after = None  # already folded into the conv after it
        if after is not None:
            nodes, scale, shift, result = after
            w, b = w * scale, b * scale + shift
            conv.output[0] = result
            removed.update(id(n) for n in nodes)
            count += 1
        if before is not None or after is not None:
            folded[conv.name] = (w, b)
    return folded, shifts, count


def _hardswish_chains(graph: _Graph, removed: set[int]) -> dict[int, tuple[str, str]]:
    """``a -> Add(3) -> Clip(0, 6) -> Mul(a, .) -> Div(6)``: (a, result) keyed by the Div."""
    chains: dict[int, tuple[str, str]] = {}
    for clip in graph.nodes:
        if clip.op_type != "Clip" or len(clip.input) != 3:
            continue
        add = graph.producer.get(clip.input[0])
        if add is None or add.op_type != "Add" or graph.only_reader(add.output[0], "Clip") is None:
            continue
        source = [i for i in add.input if graph.scalar(i) is None]
        if len(source) != 1 or graph.scalar_operand(add, source[0]) != 3.0:
            continue
        if graph.scalar(clip.input[1]) != 0.0 or graph.scalar(clip.input[2]) != 6.0:
            continue
        mul = graph.only_reader(clip.output[0], "Mul")
        if mul is None or source[0] not in mul.input:
            continue
        div = graph.only_reader(mul.output[0], "Div")
        if div is None or div.input[0] != mul.output[0] or graph.scalar(div.input[1]) != 6.0:
            continue
        removed.update({id(add), id(clip), id(mul), id(div)})
        chains[id(div)] = (source[0], div.output[0])
    return chains


def _channels(model: onnx.ModelProto) -> dict[str, int]:
    """Channels of every 4-D tensor whose shape inference can tell."""
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model).graph
    channels = {}
    for value in (*inferred.value_info, *inferred.input, *inferred.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].dim_value > 0:
            channels[value.name] = dims[1].dim_value
    return channels


def _affine_pairs(
    graph: _Graph, removed: set[int], channels: dict[str, int]
) -> dict[int, tuple[str, float, float, str, int]]:
    """The ``a -> Mul(s) -> Add(b)`` left on 4-D tensors (no convolution to fold them
    into, e.g. behind DequantizeLinear): (a, s, b, result, channels) keyed by the Add."""
    pairs: dict[int, tuple[str, float, float, str, int]] = {}
    for mul in graph.nodes:
        sources = [i for i in mul.input if graph.scalar(i) is None]
        if mul.op_type != "Mul" or id(mul) in removed or len(sources) != 1:
            continue
        scale = graph.scalar_operand(mul, sources[0])
        add = graph.only_reader(mul.output[0], "Add")
        shift = None if add is None else graph.scalar_operand(add, mul.output[0])
        if scale is None or add is None or shift is None or sources[0] not in channels:
            continue
        removed.update({id(mul), id(add)})
        pairs[id(add)] = (sources[0], scale, shift, add.output[0], channels[sources[0]])
    return pairs


def fold_graph(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """``model`` (changed in place) with the affine steps and hardswish chains folded, and
    how many of each were folded."""
    from onnx import helper, numpy_helper

    channels = _channels(model)
    graph = _Graph(model)
    removed: set[int] = set()
    weights, shifts, affine = _fold_affine(graph, removed)
    chains = _hardswish_chains(graph, removed)
    pairs = _affine_pairs(graph, removed, channels)
    kept: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type == "Conv" and node.name in shifts:  # what is left of its input's affine
            source, shift = shifts[node.name]
            name = f"{node.name}.shift"
            model.graph.initializer.append(
                numpy_helper.from_array(np.array(shift, dtype=np.float32), name)
            )
            kept.append(helper.make_node("Add", [source, name], [node.input[0]], name=name))
        if id(node) not in removed:
            kept.append(node)
        if id(node) in chains:
            source, result = chains[id(node)]
            gate = f"{result}.hardsigmoid"
            kept.append(
                helper.make_node(
                    "HardSigmoid", [source], [gate], name=gate, alpha=1.0 / 6.0, beta=0.5
                )
            )
            kept.append(helper.make_node("Mul", [source, gate], [result], name=f"{result}.mul"))
        if id(node) in pairs:  # y = s*x + b in one pass: (x - 0) / sqrt(1 + 0) * s + b
            source, scale, shift, result, count = pairs[id(node)]
            name = f"{result}.affine"
            values = {"scale": scale, "bias": shift, "mean": 0.0, "var": 1.0}
            model.graph.initializer.extend(
                numpy_helper.from_array(np.full(count, v, np.float32), f"{name}.{k}")
                for k, v in values.items()
            )
            inputs = [source, *(f"{name}.{k}" for k in values)]
            kept.append(
                helper.make_node("BatchNormalization", inputs, [result], name=name, epsilon=0.0)
            )
    for node in kept:
        if node.op_type == "Conv" and node.name in weights:
            w, b = weights[node.name]
            names = (f"{node.name}.folded_w", f"{node.name}.folded_b")
            model.graph.initializer.extend(
                [
                    numpy_helper.from_array(w.astype(np.float32), names[0]),
                    numpy_helper.from_array(b.astype(np.float32), names[1]),
                ]
            )
            del node.input[1:]
            node.input.extend(names)
    used = {name for node in kept for name in node.input} | graph.outputs
    kept = [n for n in kept if n.op_type != "Constant" or n.output[0] in used]
    initializers = [i for i in model.graph.initializer if i.name in used]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    return model, {"affine": affine, "hardswish": len(chains), "affine_passes": len(pairs)}


REC_SOURCE = "ch_PP-OCRv4_rec_infer.onnx"  # the pinned recognizer (gate_ocr.REC_MODEL)


def _recognizer(models_dir: Path) -> Path:
    return models_dir / REC_SOURCE


@dataclass(frozen=True, slots=True)
class Fold:
    """One file to fold: its source, the folded file, the record, and the source file in a
    directory when it may be folded (None: not trusted, e.g. a derived file its own record
    does not vouch for)."""

    source: str
    folded: str
    record: str
    source_path: Callable[[Path], Path | None]


REC_FOLD = Fold(
    REC_SOURCE,
    "ch_PP-OCRv4_rec_infer.folded.onnx",
    "ch_PP-OCRv4_rec_infer.folded.json",
    _recognizer,
)
DET_INT8_FOLD = Fold(
    DET_INT8_MODEL,
    "ch_PP-OCRv4_det_infer.int8.folded.onnx",
    "ch_PP-OCRv4_det_infer.int8.folded.json",
    int8_detector_path,
)
FOLDS = (REC_FOLD, DET_INT8_FOLD)


def recorded_folded_sha256(fold: Fold, models_dir: Path) -> str | None:
    """The folded file's sha256 as its record states it (no hashing: for a file that
    ``folded_path`` already checked against that record)."""
    return recorded_sha256(models_dir / fold.record)


def folded_path(fold: Fold, models_dir: Path) -> Path | None:
    """The folded file in ``models_dir`` if its record vouches for it, else None."""
    return vouched_path(
        models_dir / fold.folded, models_dir / fold.record, fold.source_path(models_dir), RECIPE
    )


def fold_model(fold: Fold, models_dir: Path) -> Path:
    """Write ``fold``'s folded file and its record into ``models_dir`` (kept when still
    valid); ``FoldError`` when its source is missing, not vouched for or not a model."""
    existing = folded_path(fold, models_dir)
    if existing is not None:
        return existing
    source = fold.source_path(models_dir)
    try:
        if source is None:
            raise FileNotFoundError
        source_bytes = source.read_bytes()  # hashed and folded: the same bytes
    except OSError:
        raise FoldError(
            f"{models_dir / fold.source} is missing or not vouched for by its record (run "
            f"'yardlink models quantize {models_dir}', or 'make models' for the pinned files)"
        ) from None
    try:
        import onnx
    except ImportError as exc:
        raise FoldError(
            f"folding needs the 'onnx' package (dev extra, 'make models'): {exc}"
        ) from None
    try:
        model, counts = fold_graph(onnx.load_model_from_string(source_bytes))
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - protobuf's and onnx's own error types
        raise FoldError(f"{source} cannot be folded: {exc}") from None
    data = model.SerializeToString()
    record = {
        "source": fold.source,
        "source_sha256": hashlib.sha256(source_bytes).hexdigest(),
        "recipe": RECIPE,
        "folded": counts,
        "versions": {p: metadata.version(p) for p in ("onnx", "numpy")},
    }
    try:
        return write_derived(models_dir / fold.folded, models_dir / fold.record, data, record)
    except OSError as exc:
        raise FoldError(f"{models_dir / fold.folded} cannot be written: {exc}") from None
