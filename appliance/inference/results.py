"""What an inference task returns, and the interface every task implements.

Re-exported by ``appliance.inference.tasks``; kept here so the task modules
can import these types without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["Detection", "InferenceTask", "TaskResult"]


@dataclass(frozen=True, slots=True)
class Detection:
    """One thing found in a frame.

    ``kind`` is ``container_code``, ``plate``, ``text`` or ``face``.
    ``value`` is the text read: the canonical 11-character code for a
    container, and for a plate the plate in CLEAR (the daemon tokenizes it
    before anything is stored).  ``valid`` is the ISO 6346 check-digit result
    for container codes, the format match for plates, None when it does not
    apply.  ``box`` is ``(x, y, width, height)`` in frame pixels.
    """

    kind: str
    value: str
    confidence: float
    valid: bool | None
    box: tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class TaskResult:
    """The result of one task on one frame, with the model identity and inference time."""

    task: str
    model_name: str
    model_version: str
    detections: list[Detection]
    inference_ms: float


class InferenceTask(Protocol):
    """A loaded task.  ``run`` is blocking (call it from a worker thread), never mutates
    ``image_bgr`` and raises ``appliance.errors.BadFrame`` for anything but a BGR uint8
    (H, W, 3) frame."""

    name: str
    model_name: str
    model_version: str

    def run(self, image_bgr: np.ndarray[Any, Any]) -> TaskResult: ...
