"""The product's inference tasks, registered as plugins, and how the daemon loads them.

    tasks, errors = await asyncio.to_thread(build_tasks, settings.inference, models_dir)
    result = await asyncio.to_thread(tasks["gate_ocr"].run, frame_bgr)

Loading takes about a second (sha256 of each file, session creation, warm-up),
so do it off the event loop.  ``run`` is safe to call from several worker
threads (ONNX Runtime sessions are thread-safe; LiteRT calls are serialised).

A new task registers here (or in its own module imported here) with
``register_task``; see ``appliance.inference.task_registry``.  ``build_tasks``
never raises for a task that cannot be loaded: it is reported with its reason
and the daemon keeps running the others.
"""

from __future__ import annotations

from pathlib import Path

from appliance.inference.face_anonymize import (
    FACE_MODEL,
    HIDDEN_KINDS,
    blur_faces,
    load_face_anonymize,
)
from appliance.inference.gate_ocr import DET_MODEL, REC_MODEL, UNREAD_TEXT, load_gate_ocr
from appliance.inference.model_files import model_path
from appliance.inference.results import Detection, InferenceTask, TaskResult
from appliance.inference.settings import InferenceSettings
from appliance.inference.task_registry import TASKS, LoadedTasks, TaskPlugin, register_task

__all__ = [
    "FACE_KINDS",
    "TASKS",
    "Detection",
    "InferenceTask",
    "TaskResult",
    "blur_faces",
    "build_tasks",
]

FACE_KINDS = HIDDEN_KINDS  # what the face task reports: faces, and boxes scored just under

register_task(
    TaskPlugin(
        name="gate_ocr",
        settings=lambda inference: inference.gate_ocr,
        load=lambda settings, models_dir: load_gate_ocr(
            settings, model_path(DET_MODEL, models_dir), model_path(REC_MODEL, models_dir)
        ),
        model_files=(DET_MODEL, REC_MODEL),
        hides=frozenset({"plate", "text", UNREAD_TEXT}),  # container codes stay visible
    )
)
register_task(
    TaskPlugin(
        name="face_anonymize",
        settings=lambda inference: inference.face_anonymize,
        load=lambda settings, models_dir: load_face_anonymize(
            settings, model_path(FACE_MODEL, models_dir)
        ),
        model_files=(FACE_MODEL,),
        hides=FACE_KINDS,  # the boxes scored just under a face too: fail closed
        gates_release=True,  # a frame whose faces are unknown never leaves
    )
)


def build_tasks(config: InferenceSettings, models_dir: Path) -> LoadedTasks:
    """Load every enabled task of the product: ``({name: task}, {name: why not})``."""
    return TASKS.load(config, models_dir)
