"""The shadow window: the new model serves, the old one runs beside it on the same
live frames, and the two are compared before the release is committed.

``ShadowWindow`` is the pure judge (results in, verdict out); ``ShadowRun`` is
its edge: a pipeline result tap that re-runs each frame on the old model in
its own thread, at a lower CPU priority (``shadow_nice``): when the re-run and
the serving model both want the CPU, the serving model gets it.  (Only the
calling thread is lowered: an ONNX Runtime session's own op threads keep the
priority they were created with.)  The shadow never queues work: a frame that arrives while the
old model is still busy with the previous one, or while frames wait in the
camera queues (the pipeline is behind; until ``shadow_max_s``, so a busy camera
cannot hold a release on trial for ever), is not compared (counted as
``skipped``): at most one extra model run at a time, and none while the serving
model needs the CPU.

The window closes after ``shadow_frames`` compared frames, or at
``shadow_max_s`` if at least ``shadow_min_frames`` were compared (else it
waits for them: a gate with no traffic proves nothing either way).  Then:
the new model's error rate, its p99 inference time against the task's SLA,
the share of frames where both found the same things, and the change of mean
confidence decide commit or rollback.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from appliance.inference.results import InferenceTask, TaskResult
from appliance.sources.frames import Frame
from appliance.updates.settings import UpdateSettings

__all__ = ["ShadowRun", "ShadowVerdict", "ShadowWindow"]


@dataclass(frozen=True)
class ShadowVerdict:
    commit: bool
    reason: str
    evidence: dict[str, Any]


@dataclass
class ShadowWindow:
    settings: UpdateSettings
    sla_ms: float
    started_at: float
    compared: int = 0
    new_errors: int = 0
    agreements: int = 0
    skipped: int = 0
    new_ms: list[float] = field(default_factory=list)
    old_ms: list[float] = field(default_factory=list)
    new_confidences: list[float] = field(default_factory=list)
    old_confidences: list[float] = field(default_factory=list)

    def add(self, new: TaskResult | None, old: TaskResult | None) -> None:
        """One frame seen by both (``None``: that model raised on it)."""
        self.compared += 1
        if new is None:
            self.new_errors += 1
        else:
            self.new_ms.append(new.inference_ms)
            self.new_confidences += [d.confidence for d in new.detections]
        if old is not None:
            self.old_ms.append(old.inference_ms)
            self.old_confidences += [d.confidence for d in old.detections]
        if new is not None and old is not None and _found(new) == _found(old):
            self.agreements += 1

    def verdict(self, now: float) -> ShadowVerdict | None:
        """None while the window is open; then commit or roll back, with the figures."""
        s = self.settings
        timed_out = now - self.started_at >= s.shadow_max_s
        if self.compared < s.shadow_frames and not (
            timed_out and self.compared >= s.shadow_min_frames
        ):
            return None
        evidence = self.evidence()
        limit_ms = s.shadow_p99_vs_sla * self.sla_ms
        checks = [
            (
                evidence["error_rate"] <= s.shadow_max_error_rate,
                f"error rate {evidence['error_rate']:.3f} over {s.shadow_max_error_rate}",
            ),
            (
                evidence["p99_ms"] <= limit_ms,
                f"p99 {evidence['p99_ms']:.1f} ms over {limit_ms:.0f} ms",
            ),
            (
                evidence["agreement"] >= s.shadow_min_agreement,
                f"agreement with the old model {evidence['agreement']:.2f} under"
                f" {s.shadow_min_agreement}",
            ),
            (
                evidence["confidence_drop"] <= s.shadow_max_confidence_drop,
                f"mean confidence fell by {evidence['confidence_drop']:.3f}",
            ),
        ]
        failed = [why for ok, why in checks if not ok]
        if failed:
            return ShadowVerdict(False, "shadow window: " + "; ".join(failed), evidence)
        return ShadowVerdict(True, f"shadow window passed on {self.compared} frames", evidence)

    def evidence(self) -> dict[str, Any]:
        both = max(self.compared - self.new_errors, 1)
        return {
            "frames": self.compared,
            "skipped": self.skipped,
            "error_rate": round(self.new_errors / max(self.compared, 1), 4),
            "p99_ms": round(_p99(self.new_ms), 1),
            "old_p99_ms": round(_p99(self.old_ms), 1),
            "agreement": round(self.agreements / both, 4),
            "confidence_drop": round(_mean(self.old_confidences) - _mean(self.new_confidences), 4),
        }


def _found(result: TaskResult) -> set[tuple[str, str]]:
    return {(d.kind, d.value) for d in result.detections}


def _p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def lower_thread_priority(nice: int) -> None:
    """Raise the calling thread's niceness by ``nice`` (Linux: niceness is per thread,
    and raising it needs no privilege); elsewhere nothing, rather than the whole
    process's priority."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):  # a sandbox may forbid it: same priority then
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))


class ShadowRun:
    """Feeds a ``ShadowWindow`` from the pipeline's result tap (on the event loop)."""

    def __init__(
        self,
        task_name: str,
        old_task: InferenceTask,
        window: ShadowWindow,
        run_on_frame: Callable[[InferenceTask, Frame], TaskResult],
        clock: Callable[[], float] = time.monotonic,
        behind: Callable[[], bool] = lambda: False,
        nice: int = 0,
    ) -> None:
        self.task_name = task_name
        self.window = window
        self._old = old_task
        self._run_on_frame = run_on_frame
        self._clock = clock
        self._behind = behind
        self._executor = ThreadPoolExecutor(
            1, f"shadow-{task_name}", initializer=lower_thread_priority, initargs=(nice,)
        )
        self._pending: asyncio.Future[TaskResult] | None = None
        self.done: asyncio.Future[ShadowVerdict] = asyncio.get_running_loop().create_future()

    def tap(
        self, name: str, frame: Frame, result: TaskResult | None, error: BaseException | None
    ) -> None:
        if name != self.task_name or self.done.done():
            return
        if self._pending is not None or (self._behind() and not self._overdue()):
            self.window.skipped += 1
            return
        loop = asyncio.get_running_loop()
        self._pending = loop.run_in_executor(self._executor, self._run_on_frame, self._old, frame)
        self._pending.add_done_callback(lambda old: self._compare(result, old))

    def _overdue(self) -> bool:
        """Past ``shadow_max_s`` the backlog no longer defers comparisons, so a busy
        camera cannot keep a release on trial for ever."""
        return self._clock() - self.window.started_at >= self.window.settings.shadow_max_s

    def _compare(self, new: TaskResult | None, old: asyncio.Future[TaskResult]) -> None:
        self._pending = None
        old_result = None if old.cancelled() or old.exception() is not None else old.result()
        self.window.add(new, old_result)
        self.check()

    def check(self) -> None:
        """Settle ``done`` once the window has a verdict (also called on a timer)."""
        if self.done.done():
            return
        verdict = self.window.verdict(self._clock())
        if verdict is not None:
            self.done.set_result(verdict)

    async def verdict(self, poll_s: float = 1.0) -> ShadowVerdict:
        """Wait for the verdict (the time limit is checked every ``poll_s``)."""
        while not self.done.done():
            await asyncio.wait({self.done}, timeout=poll_s)
            self.check()
        return self.done.result()

    async def close(self) -> None:
        """Wait for a shadow run still in flight, then stop the thread."""
        pending = self._pending
        if pending is not None:
            await asyncio.wait({pending})
        await asyncio.to_thread(self._executor.shutdown, True)
