"""What must be hidden in a frame before it may leave the site: faces, plates, free text.

The tasks find the regions: ``face_anonymize`` finds faces, ``gate_ocr`` reads
plates and other text (container codes are business identifiers and stay
visible).  A frame's redaction is **complete** once every loaded task that can
find such a region has run on it; only then is it known what to hide.

* ``redaction_of(results, loaded)`` (pure) turns the results of a frame into a
  :class:`Redaction`, or None while the faces are still unknown (a frame whose
  faces are unknown never leaves);
* :class:`PiiDetector` runs those tasks again on a decoded frame, for a kept
  original whose redaction was incomplete when it was indexed (the appliance
  crashed while ``gate_ocr`` still ran).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from appliance.inference.results import InferenceTask, TaskResult

__all__ = ["TEXT_PII_KINDS", "Box", "PiiDetector", "Redaction", "redaction_of"]

Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels

_FACE_TASK = "face_anonymize"
_PII_TASKS = frozenset({_FACE_TASK, "gate_ocr"})
TEXT_PII_KINDS = frozenset({"plate", "text"})  # tokenised in records, hidden in pixels
_PII_KINDS = TEXT_PII_KINDS | {"face"}


@dataclass(frozen=True, slots=True)
class Redaction:
    boxes: tuple[Box, ...]
    complete: bool  # every loaded PII task ran: nothing else is known to need hiding


def redaction_of(results: Iterable[TaskResult], loaded: Iterable[str]) -> Redaction | None:
    """The redaction of a frame given the task results so far; None while the faces are unknown."""
    results = list(results)
    ran = {result.task for result in results}
    if _FACE_TASK not in ran:
        return None
    boxes = tuple(d.box for r in results for d in r.detections if d.kind in _PII_KINDS)
    return Redaction(boxes, complete=_PII_TASKS.intersection(loaded) <= ran)


class PiiDetector:
    """Runs the loaded PII tasks on a frame (blocking: call it from a worker thread)."""

    def __init__(self, tasks: Mapping[str, InferenceTask]) -> None:
        self._tasks = [task for name, task in tasks.items() if name in _PII_TASKS]

    def boxes(self, image_bgr: np.ndarray[Any, Any]) -> tuple[Box, ...] | None:
        """Every PII box in the frame; None if the face task is not loaded."""
        results = [task.run(image_bgr) for task in self._tasks]
        redaction = redaction_of(results, (task.name for task in self._tasks))
        return None if redaction is None else redaction.boxes
