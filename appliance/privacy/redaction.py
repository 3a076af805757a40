"""What must be hidden in a frame before it may leave the site: faces, plates, free text.

The tasks find the regions; which task finds what is each task's own declaration
(``TaskPlugin.hides`` and ``TaskPlugin.gates_release`` in
``appliance.inference.task_registry``), gathered into a :class:`RedactionPolicy`,
so this module names no task.  Today ``face_anonymize`` finds faces and gates
every release, and ``gate_ocr`` reads plates and other text (container codes are
business identifiers and stay visible).  A frame's redaction is **complete** once
every loaded task that can find such a region has run on it; only then is it known
what to hide.

* ``RedactionPolicy.redaction_of(results, loaded)`` (pure) turns the results of a
  frame into a :class:`Redaction`, or None while a gating task (the faces) has not
  run (such a frame never leaves);
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

__all__ = ["RELEASE_MARGIN", "TEXT_PII_KINDS", "Box", "PiiDetector", "Redaction", "RedactionPolicy"]

Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels

TEXT_PII_KINDS = frozenset({"plate", "text"})  # values tokenised in records, hidden in pixels
# each box is hidden grown by this fraction of its size on every side: a face box is
# the face's core (brows to chin), and the hair and ears around it go too
RELEASE_MARGIN = 0.4


@dataclass(frozen=True, slots=True)
class Redaction:
    boxes: tuple[Box, ...]
    complete: bool  # every loaded PII task ran: nothing else is known to need hiding


@dataclass(frozen=True, slots=True)
class RedactionPolicy:
    """Which tasks find what must be hidden, and which must have run before a frame leaves."""

    hides: Mapping[str, frozenset[str]]  # task name -> detection kinds to hide in pixels
    gates: frozenset[str]  # tasks without whose result a frame never leaves

    @property
    def hidden_kinds(self) -> frozenset[str]:
        return frozenset().union(*self.hides.values())

    def finds_pii(self, task: str) -> bool:
        return bool(self.hides.get(task)) or task in self.gates

    def redaction_of(
        self, results: Iterable[TaskResult], loaded: Iterable[str]
    ) -> Redaction | None:
        """The redaction of a frame given the task results so far; None while a gating
        task (the faces) has not run on it."""
        results = list(results)
        ran = {result.task for result in results}
        if not self.gates <= ran:
            return None
        kinds = self.hidden_kinds
        boxes = tuple(d.box for r in results for d in r.detections if d.kind in kinds)
        pii_loaded = {task for task in loaded if self.finds_pii(task)}
        return Redaction(boxes, complete=pii_loaded <= ran)


class PiiDetector:
    """Runs the loaded PII tasks on a frame (blocking: call it from a worker thread)."""

    def __init__(self, tasks: Mapping[str, InferenceTask], policy: RedactionPolicy) -> None:
        self._policy = policy
        self._tasks = [task for name, task in tasks.items() if policy.finds_pii(name)]

    def boxes(self, image_bgr: np.ndarray[Any, Any]) -> tuple[Box, ...] | None:
        """Every PII box in the frame; None if a gating task (the faces) is not loaded."""
        results = [task.run(image_bgr) for task in self._tasks]
        redaction = self._policy.redaction_of(results, (task.name for task in self._tasks))
        return None if redaction is None else redaction.boxes
