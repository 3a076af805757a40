"""The face model's threads: long-lived threads, one per interpreter of the face model,
that run the input tensors they are sent (``ModelThreads``), each keeping an
interpreter per input shape (``ModelsByShape``: the scan windows are not 128x128).

LiteRT's ``invoke`` releases the GIL, so a frame's calls run side by side on both
cores while the task's own thread makes the next inputs and decodes the outputs
(``appliance.inference.face_anonymize``).
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Sequence
from queue import SimpleQueue
from typing import Any

import numpy as np

from appliance.errors import ModelLoadError
from appliance.inference.runtimes import LiteRtModel, LoadedModel, TensorSpec, load_model
from appliance.inference.settings import FaceAnonymizeSettings

__all__ = ["ModelThreads", "ModelsByShape", "Outputs", "Replies", "outputs_of"]

Image = np.ndarray[Any, Any]

Outputs = dict[str, Image]
Replies = SimpleQueue[tuple[int, "Outputs | BaseException"]]
Request = tuple[int, Image, Replies]
_SHAPES_KEPT = 16  # input shapes a model thread keeps an interpreter for


def _resized(model: LoadedModel, shape: tuple[int, ...], settings: FaceAnonymizeSettings) -> Any:
    """A new interpreter of ``model``'s file whose input is resized to ``shape``."""
    if not isinstance(model, LiteRtModel):
        raise ModelLoadError(f"runtime {model.runtime!r} cannot resize the face model's input")
    loaded = load_model(settings.runtime, model.path)
    if not isinstance(loaded, LiteRtModel):
        raise ModelLoadError(f"runtime {loaded.runtime!r} cannot resize the face model's input")
    spec = loaded.inputs[0]
    try:
        loaded.interpreter.resize_tensor_input(loaded.input_index[spec.name], list(shape))
        loaded.interpreter.allocate_tensors()
    except Exception as exc:  # the interpreter raises ValueError/RuntimeError
        raise ModelLoadError(f"{model.path} cannot take an input of {shape}: {exc}") from exc
    return dataclasses.replace(loaded, inputs=(TensorSpec(spec.name, shape, spec.dtype),))


class ModelsByShape:
    """One model thread's interpreters: the one loaded (128x128) and, made on first
    need, one resized for each other input shape a scan window has.  A model whose
    input sides are dynamic (``None``) runs every shape itself."""

    def __init__(self, model: LoadedModel, settings: FaceAnonymizeSettings) -> None:
        self.model = model
        self._settings = settings
        self._by_shape: dict[tuple[int, ...], LoadedModel] = {}
        self._lock = threading.Lock()

    def get(self, shape: tuple[int, ...]) -> LoadedModel:
        spec = self.model.inputs[0].shape if self.model.inputs else ()
        if shape == spec or None in spec:
            return self.model
        with self._lock:
            model = self._by_shape.get(shape)
            if model is None:
                if len(self._by_shape) >= _SHAPES_KEPT:
                    self._by_shape.clear()
                model = self._by_shape[shape] = _resized(self.model, shape, self._settings)
            return model


def _serve(models: ModelsByShape, input_name: str, requests: SimpleQueue[Request | None]) -> None:
    while (request := requests.get()) is not None:
        index, tensor, replies = request
        try:
            replies.put((index, models.get(tensor.shape).run({input_name: tensor})))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            replies.put((index, exc))


def _stop(requests: SimpleQueue[Request | None], threads: int) -> None:
    for _ in range(threads):
        requests.put(None)


class ModelThreads:
    """Long-lived threads, one per model, that run the tensors they are sent.

    ``submit(index, tensor, replies)`` queues one call on a queue all threads
    share, so the next free thread takes it; ``(index, outputs)`` (or the
    exception) arrives on ``replies``, in the order the calls finish.  Every
    model is an interpreter of its own (one is not safe to share), of the same
    file.  LiteRT's ``invoke`` releases the GIL, so the calls run side by side
    and the caller keeps making inputs and decoding outputs meanwhile.  The
    threads start on first use and stop on ``close()`` or when their owner is
    garbage collected (they hold no reference to the owner).
    """

    def __init__(self, models: Sequence[ModelsByShape], input_name: str) -> None:
        self._models = tuple(models)
        self._input = input_name
        self._requests: SimpleQueue[Request | None] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._stopper: weakref.finalize[Any, Any] | None = None  # stops the running threads
        self._lock = threading.Lock()

    def submit(self, index: int, tensor: Image, replies: Replies) -> None:
        if not self._threads:
            self._start()
        self._requests.put((index, tensor, replies))

    def _start(self) -> None:
        with self._lock:
            if self._threads:
                return
            threads = [
                threading.Thread(
                    target=_serve,
                    args=(model, self._input, self._requests),
                    name="face-anonymize-model",
                    daemon=True,
                )
                for model in self._models
            ]
            for thread in threads:
                thread.start()
            self._threads = threads
            self._stopper = weakref.finalize(self, _stop, self._requests, len(threads))

    def close(self) -> None:
        """Stop the threads (after the calls already queued); a later ``submit`` restarts them."""
        with self._lock:
            threads, self._threads = self._threads, []
            stopper, self._stopper = self._stopper, None
        if stopper is not None:
            stopper()  # runs _stop once and unregisters it, so a restart registers afresh
        for thread in threads:
            thread.join()


def outputs_of(reply: Outputs | BaseException) -> Outputs:
    """A model thread's reply: its outputs, or the exception it raised, raised here."""
    if isinstance(reply, BaseException):
        raise reply
    return reply
