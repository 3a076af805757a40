"""Load an inference task from a release's files, and check it against its golden cases.

The same code runs on the operator's machine (``yardlink models package``
records the expected outputs) and on the appliance (the staged model must
reproduce them and stay inside the task's latency budget), with the real
runtimes.  A task loaded from a release reports the release's version as its
``model_version``, so every record names the model that really ran.  Derived files
the release carries (INT8, folded) are checked first (``derived_members``) and then
picked by the task's loader as from the models directory; the log names what runs.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.errors import ApplianceError
from appliance.inference.face_anonymize import load_face_anonymize
from appliance.inference.gate_ocr import load_gate_ocr
from appliance.inference.results import InferenceTask, TaskResult
from appliance.inference.settings import InferenceSettings
from appliance.updates.contents import ExpectedDetection, GoldenCase, ReleaseContents
from appliance.updates.derived_members import check_derived
from appliance.updates.errors import ReleaseError, ReleaseValidationFailed

__all__ = [
    "TASK_ROLES",
    "GoldenReport",
    "close_task",
    "expected_detections",
    "files_in_use",
    "load_release_task",
    "read_golden_frame",
    "sla_ms",
    "validate_golden",
]

_Loader = Callable[[InferenceSettings, Mapping[str, Path]], InferenceTask]

_LOADERS: dict[str, _Loader] = {
    "gate_ocr": lambda inference, p: load_gate_ocr(inference.gate_ocr, p["det"], p["rec"]),
    "face_anonymize": lambda inference, p: load_face_anonymize(inference.face_anonymize, p["face"]),
}
TASK_ROLES: dict[str, tuple[str, ...]] = {"gate_ocr": ("det", "rec"), "face_anonymize": ("face",)}
_LATENCY_RUNS = 3  # timed runs per golden case after the first (warm-up) one
_log = logging.getLogger(__name__)


def sla_ms(inference: InferenceSettings, task: str) -> float:
    """The task's latency budget on this device (its configured p99 SLA)."""
    section: Any = getattr(inference, task, None)
    if section is None:
        raise ReleaseError(f"this appliance has no inference task {task!r}")
    return float(section.sla_p99_ms)


def load_release_task(
    contents: ReleaseContents, root: Path, inference: InferenceSettings
) -> InferenceTask:
    """Load and warm up the release's task from its files under ``root``; a derived
    file whose record does not vouch fails it (``ReleaseValidationFailed``, ``derived``)."""
    loader = _LOADERS.get(contents.task)
    if loader is None:
        raise ReleaseError(f"release for unknown task {contents.task!r}")
    roles = TASK_ROLES[contents.task]
    if sorted(contents.models) != sorted(roles):
        raise ReleaseError(f"task {contents.task} needs model roles {roles}, got {contents.models}")
    paths = {role: root / path for role, path in contents.models.items()}
    derived = [
        name for d in sorted({p.parent for p in paths.values()}) for name in check_derived(d)
    ]
    try:
        task = loader(inference, paths)
    except ApplianceError:
        raise
    except Exception as exc:
        raise ReleaseError(f"{contents.name} {contents.version}: cannot load: {exc}") from exc
    task.model_version = contents.version  # records name the release that ran
    _log.info(
        "release %s %s of %s runs %s (derived files carried: %s)",
        contents.name,
        contents.version,
        contents.task,
        ", ".join(files_in_use(task, root)),
        ", ".join(derived) or "none",
    )
    return task


def files_in_use(task: InferenceTask, root: Path) -> list[str]:
    """The model files ``task`` runs, relative to ``root`` when under it."""
    models = [getattr(task, name, None) for name in ("det", "rec")]
    models += list(getattr(task, "models", ()))
    paths = {path for m in models if isinstance(path := getattr(m, "path", None), Path)}
    return sorted(str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in paths)


def close_task(task: InferenceTask) -> None:
    close: Callable[[], None] | None = getattr(task, "close", None)
    if close is not None:
        close()


def read_golden_frame(path: Path) -> np.ndarray[Any, Any]:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ReleaseError(f"golden input {path} is not an image")
    return image


def expected_detections(result: TaskResult) -> list[ExpectedDetection]:
    return [
        ExpectedDetection(kind=d.kind, value=d.value, confidence=round(d.confidence, 4))
        for d in result.detections
    ]


@dataclass(frozen=True)
class GoldenReport:
    cases: int
    worst_median_ms: float  # the slowest case's median over the timed runs
    budget_ms: float


def validate_golden(
    task: InferenceTask,
    contents: ReleaseContents,
    root: Path,
    budget_ms: float,
    *,
    latency_runs: int = _LATENCY_RUNS,
) -> GoldenReport:
    """Run every golden case; raise ``ReleaseValidationFailed`` (check ``golden`` or
    ``latency``) unless outputs match and the slowest case's median is in budget."""
    medians = []
    for case in contents.golden:
        frame = read_golden_frame(root / case.input)
        first = task.run(frame)  # also the warm-up run
        _compare(case, first, contents.confidence_tolerance)
        timings = [first.inference_ms]
        for _ in range(latency_runs):
            started = time.perf_counter()
            task.run(frame)
            timings.append((time.perf_counter() - started) * 1000.0)
        medians.append(statistics.median(timings[1:] or timings))
    worst = max(medians)
    if worst > budget_ms:
        raise ReleaseValidationFailed(
            f"{contents.name} {contents.version}: a golden case took {worst:.1f} ms (median),"
            f" over the task's budget of {budget_ms:.0f} ms",
            check="latency",
        )
    return GoldenReport(cases=len(contents.golden), worst_median_ms=worst, budget_ms=budget_ms)


def _compare(case: GoldenCase, result: TaskResult, tolerance: float) -> None:
    got = Counter((d.kind, d.value) for d in result.detections)
    want = Counter((d.kind, d.value) for d in case.expected)
    if got != want:
        wanted, found = sorted(want.elements()), sorted(got.elements())
        raise ReleaseValidationFailed(
            f"golden {case.input}: expected {wanted}, got {found}", check="golden"
        )
    confidences = {(d.kind, d.value): d.confidence for d in result.detections}
    for expected in case.expected:
        actual = confidences[(expected.kind, expected.value)]
        if abs(actual - expected.confidence) > tolerance:
            raise ReleaseValidationFailed(
                f"golden {case.input}: {expected.kind} {expected.value} confidence"
                f" {actual:.3f}, expected {expected.confidence:.3f} +- {tolerance}",
                check="golden",
            )
