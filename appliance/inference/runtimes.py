"""Inference runtimes as plugins: ONNX Runtime and LiteRT behind one ``LoadedModel``.

Each runtime has a key (``"onnxruntime"``, ``"litert"``), a pydantic config
class with ``extra="forbid"`` and a loader, and registers itself in
``RUNTIMES``.  ``load_model(config, path, warmup_shapes)`` returns a
``LoadedModel`` whose ``run({input_name: array}) -> {output_name: array}`` is
the only thing tasks call.

Failure modes are typed (see ``appliance.errors``):

* the runtime's Python library is not installed -> ``RuntimeUnavailable``
  (the daemon reports the task as skipped and keeps running);
* the file cannot be parsed or initialised -> ``ModelLoadError`` with the
  path, the runtime and the library's own message.

Every model is warmed up when it is loaded (one inference on zeros), so the
first real frame does not pay for lazy allocation and kernel selection.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from appliance.errors import ModelLoadError, RuntimeUnavailable

__all__ = [
    "RUNTIMES",
    "LiteRtConfig",
    "LoadedModel",
    "OnnxRuntimeConfig",
    "RuntimeConfig",
    "RuntimePlugin",
    "available_runtimes",
    "load_model",
]

Tensor = np.ndarray[Any, Any]
WarmupShapes = Mapping[str, tuple[int, ...]]


class OnnxRuntimeConfig(BaseModel):
    """ONNX Runtime options.  CPU by default; threads sized for a 2-core gateway."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["onnxruntime"] = "onnxruntime"
    providers: list[str] = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        description="execution providers in order of preference; missing ones are an error",
    )
    intra_op_threads: int = Field(
        default=2, ge=0, description="threads inside one op; 0 = ORT default"
    )
    inter_op_threads: int = Field(
        default=1, ge=0, description="threads across ops; 0 = ORT default"
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    allow_spinning: bool = Field(
        default=True,
        description="intra-op threads busy-wait between ops (ORT's default); False lets a "
        "second thread sleep instead, so it costs CPU only while it works (docs/INFERENCE.md)",
    )


class LiteRtConfig(BaseModel):
    """LiteRT (TFLite) options.  ``library="auto"`` tries ai-edge-litert, then tflite-runtime."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["litert"] = "litert"
    num_threads: int = Field(default=1, ge=1, description="CPU kernel threads for the interpreter")
    library: Literal["auto", "ai-edge-litert", "tflite-runtime"] = "auto"


RuntimeConfig = OnnxRuntimeConfig | LiteRtConfig


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Name, shape (None for a dynamic dimension) and numpy dtype of one model input."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype[Any]


class LoadedModel(Protocol):
    """A model ready to run.  ``run`` is blocking and safe to call from one worker thread."""

    runtime: str
    path: Path
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    warmup_ms: float

    def run(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]: ...


@dataclass(frozen=True, slots=True)
class RuntimePlugin:
    """One registered runtime: its key, config class and loader."""

    name: str
    config_class: type[BaseModel]
    load: Callable[[Any, Path], LoadedModel]
    library: Callable[[Any], str]  # which Python module it would use (for status)


RUNTIMES: dict[str, RuntimePlugin] = {}


def register_runtime(plugin: RuntimePlugin) -> RuntimePlugin:
    """Add a runtime to the registry under its key (the ``kind`` field of its config)."""
    RUNTIMES[plugin.name] = plugin
    return plugin


def _import_or_unavailable(module: str, runtime: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeUnavailable(
            f"runtime {runtime!r} is unavailable: Python module {module!r} is not installed"
        ) from exc


# --------------------------------------------------------------------------- ONNX Runtime

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int64)": np.int64}


@dataclass(slots=True)
class OnnxModel:
    """An ``onnxruntime.InferenceSession`` behind the ``LoadedModel`` interface."""

    session: Any  # onnxruntime.InferenceSession: bare access for benchmarks
    path: Path
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    runtime: str = "onnxruntime"
    warmup_ms: float = 0.0

    def run(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        outputs = self.session.run(list(self.output_names), dict(inputs))
        return dict(zip(self.output_names, outputs, strict=True))


def _load_onnx(config: OnnxRuntimeConfig, path: Path) -> OnnxModel:
    ort = _import_or_unavailable("onnxruntime", "onnxruntime")
    available = set(ort.get_available_providers())
    missing = [p for p in config.providers if p not in available]
    if missing:
        raise RuntimeUnavailable(
            f"onnxruntime execution providers {missing} are not available here "
            f"(available: {sorted(available)})"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = config.inter_op_threads
    options.log_severity_level = 3  # errors only; ORT warnings are not ours to print
    if not config.allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options.graph_optimization_level = levels[config.graph_optimization]
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=config.providers)
    except Exception as exc:  # ORT raises its own untyped errors for bad files
        raise ModelLoadError(f"onnxruntime cannot load model {path}: {exc}") from exc
    inputs = tuple(
        TensorSpec(
            i.name,
            tuple(d if isinstance(d, int) else None for d in i.shape),
            np.dtype(_ORT_DTYPES.get(i.type, np.float32)),
        )
        for i in session.get_inputs()
    )
    outputs = tuple(o.name for o in session.get_outputs())
    return OnnxModel(session=session, path=path, inputs=inputs, output_names=outputs)


register_runtime(
    RuntimePlugin(
        name="onnxruntime",
        config_class=OnnxRuntimeConfig,
        load=_load_onnx,
        library=lambda _config: "onnxruntime",
    )
)


# --------------------------------------------------------------------------- LiteRT

_LITERT_MODULES = {
    "ai-edge-litert": "ai_edge_litert.interpreter",
    "tflite-runtime": "tflite_runtime.interpreter",
}


def _litert_module(config: LiteRtConfig) -> Any:
    if config.library != "auto":
        return _import_or_unavailable(_LITERT_MODULES[config.library], "litert")
    for module in _LITERT_MODULES.values():
        try:
            return importlib.import_module(module)
        except ImportError:
            continue
    raise RuntimeUnavailable(
        "runtime 'litert' is unavailable: neither ai-edge-litert nor tflite-runtime is installed"
    )


@dataclass(slots=True)
class LiteRtModel:
    """A LiteRT ``Interpreter`` behind ``LoadedModel``; a lock serialises ``invoke``."""

    interpreter: Any  # bare access for benchmarks
    path: Path
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    input_index: dict[str, int]
    output_index: dict[str, int]
    runtime: str = "litert"
    warmup_ms: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        with self.lock:  # an Interpreter is not safe to share between threads
            for name, array in inputs.items():
                self.interpreter.set_tensor(self.input_index[name], array)
            self.interpreter.invoke()
            return {
                name: _owned(self.interpreter.get_tensor(index))
                for name, index in self.output_index.items()
            }


def _owned(array: Tensor) -> Tensor:
    """``get_tensor`` already returns a copy (the next ``invoke`` cannot change it); copy
    only if a runtime ever hands out a view into its buffers instead."""
    return array if array.flags.owndata else array.copy()


def _load_litert(config: LiteRtConfig, path: Path) -> LiteRtModel:
    module = _litert_module(config)
    try:
        interpreter = module.Interpreter(model_path=str(path), num_threads=config.num_threads)
        interpreter.allocate_tensors()
    except Exception as exc:  # the interpreter raises ValueError/RuntimeError for bad files
        raise ModelLoadError(f"litert cannot load model {path}: {exc}") from exc
    in_details = interpreter.get_input_details()
    out_details = interpreter.get_output_details()
    inputs = tuple(
        TensorSpec(d["name"], tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]))
        for d in in_details
    )
    return LiteRtModel(
        interpreter=interpreter,
        path=path,
        inputs=inputs,
        output_names=tuple(d["name"] for d in out_details),
        input_index={d["name"]: int(d["index"]) for d in in_details},
        output_index={d["name"]: int(d["index"]) for d in out_details},
    )


def _litert_library(config: LiteRtConfig) -> str:
    return str(_litert_module(config).__name__).split(".")[0]


register_runtime(
    RuntimePlugin(
        name="litert", config_class=LiteRtConfig, load=_load_litert, library=_litert_library
    )
)


# --------------------------------------------------------------------------- entry points


def available_runtimes() -> dict[str, str]:
    """``{runtime: library module, or the reason it is unavailable}`` with default options."""
    report: dict[str, str] = {}
    for name, plugin in RUNTIMES.items():
        try:
            report[name] = plugin.library(plugin.config_class())
        except RuntimeUnavailable as exc:
            report[name] = f"unavailable: {exc}"
    return report


def _warm_up(model: LoadedModel, warmup_shapes: WarmupShapes | None) -> float:
    feeds: dict[str, Tensor] = {}
    for spec in model.inputs:
        shape = (warmup_shapes or {}).get(spec.name)
        if shape is None:
            if any(d is None for d in spec.shape):
                raise ModelLoadError(
                    f"model {model.path} input {spec.name!r} has dynamic shape {spec.shape}: "
                    "a warm-up shape is required"
                )
            shape = tuple(int(d) for d in spec.shape if d is not None)
        feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
    started = time.perf_counter()
    try:
        model.run(feeds)
    except Exception as exc:  # a model that loads but cannot run is a load failure
        raise ModelLoadError(f"{model.runtime} warm-up of {model.path} failed: {exc}") from exc
    return (time.perf_counter() - started) * 1000.0


def load_model(
    config: RuntimeConfig, path: Path, warmup_shapes: WarmupShapes | None = None
) -> LoadedModel:
    """Load ``path`` with the runtime named by ``config.kind`` and warm it up.

    Raises ``RuntimeUnavailable`` when the runtime's library is missing and
    ``ModelLoadError`` when the file is missing, unreadable or fails warm-up.
    """
    plugin = RUNTIMES.get(config.kind)
    if plugin is None:
        raise RuntimeUnavailable(f"no runtime registered under {config.kind!r}")
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    model = plugin.load(config, path)
    model.warmup_ms = _warm_up(model, warmup_shapes)
    return model
