"""The interface the daemon uses: build the enabled tasks, then ``task.run(frame)``.

    tasks, errors = await asyncio.to_thread(build_tasks, settings.inference, models_dir)
    result = await asyncio.to_thread(tasks["gate_ocr"].run, frame_bgr)

Loading takes about a second (sha256 of each file, session creation, warm-up),
so do it off the event loop.  ``run`` is safe to call from several worker
threads (ONNX Runtime sessions are thread-safe; LiteRT calls are serialised).

``build_tasks`` never raises for a task that cannot be loaded: a missing
runtime library (``RuntimeUnavailable``), a missing or mismatching model file,
or a model the runtime rejects (``ModelLoadError``) puts the task's name and a
one-line reason into ``errors`` and leaves it out of ``tasks``; the daemon
reports that in its status and keeps running the others.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from appliance.errors import ModelLoadError, RuntimeUnavailable
from appliance.inference.face_anonymize import FACE_MODEL, blur_faces, load_face_anonymize
from appliance.inference.gate_ocr import DET_MODEL, REC_MODEL, load_gate_ocr
from appliance.inference.model_files import ModelFileError, model_path
from appliance.inference.results import Detection, InferenceTask, TaskResult
from appliance.inference.settings import InferenceSettings

__all__ = [
    "Detection",
    "InferenceTask",
    "TaskResult",
    "blur_faces",
    "build_tasks",
]


def _load_one(loader: Callable[[], InferenceTask]) -> InferenceTask | str:
    try:
        return loader()
    except RuntimeUnavailable as exc:
        return f"runtime unavailable, task skipped: {exc}"
    except ModelFileError as exc:
        return f"model file rejected: {exc}"
    except ModelLoadError as exc:
        return f"model failed to load: {exc}"


def build_tasks(
    config: InferenceSettings, models_dir: Path
) -> tuple[dict[str, InferenceTask], dict[str, str]]:
    """Load every enabled task: ``({name: task}, {name: why it is not loaded})``."""
    loaders: dict[str, Callable[[], InferenceTask]] = {}
    if config.gate_ocr.enabled:
        loaders["gate_ocr"] = lambda: load_gate_ocr(
            config.gate_ocr, model_path(DET_MODEL, models_dir), model_path(REC_MODEL, models_dir)
        )
    if config.face_anonymize.enabled:
        loaders["face_anonymize"] = lambda: load_face_anonymize(
            config.face_anonymize, model_path(FACE_MODEL, models_dir)
        )
    tasks: dict[str, InferenceTask] = {}
    errors: dict[str, str] = {}
    for name, loader in loaders.items():
        outcome = _load_one(loader)
        if isinstance(outcome, str):
            errors[name] = outcome
        else:
            tasks[name] = outcome
    return tasks, errors
