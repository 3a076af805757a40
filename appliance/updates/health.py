"""The health watch after a commit: a committed release is still judged on live frames.

The shadow window proves a release on its first frames; a regression may show
later (other light, other traffic, a slow leak).  For ``health_watch_s`` after
a commit, every result of the task goes into a ``HealthWindow`` (the pure
judge) in blocks of ``health_block_frames`` frames.  A block whose error rate
is above ``health_max_error_rate``, or whose p99 inference time is above
``health_p99_vs_sla`` x the task's SLA, is unhealthy; ``health_bad_blocks``
unhealthy blocks in a row are a **health regression** (one slow spike on a
busy gateway is not, a lasting one is): the release is rolled back locally to
the previous slot and reported (``rolled_back``, ``check: health_regression``)
in the next handshake, where the cloud's rollout counts it as a failure.
Inference time (the model's own run) is judged, not the time a frame waited in
its queue: a busy camera is not the model's fault.

``HealthWatch`` is the edge: a pipeline result tap feeding the window and a
future settled with the regression's reason.  The watch is marked in
``state.json`` (``TaskSlots.watching``); a restart during it starts a full
window again (the local clock is not trusted across a restart).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

from appliance.inference.results import TaskResult
from appliance.sources.frames import Frame
from appliance.updates.settings import UpdateSettings

__all__ = ["HEALTH_REGRESSION", "HealthWatch", "HealthWindow"]

HEALTH_REGRESSION = "health_regression"  # the outcome's ``check`` of such a rollback


@dataclass
class HealthWindow:
    settings: UpdateSettings
    sla_ms: float
    started_at: float
    frames: int = 0  # results seen over the whole watch
    errors: int = 0
    blocks: int = 0  # blocks judged healthy
    unhealthy_in_row: int = 0  # unhealthy blocks since the last healthy one
    block_ms: list[float] = field(default_factory=list)  # the current block
    block_errors: int = 0

    def add(self, inference_ms: float | None) -> str | None:
        """One result (``None``: the task raised); the regression's reason when the
        block this frame completes is the ``health_bad_blocks``-th unhealthy one in a
        row, else None."""
        self.frames += 1
        if inference_ms is None:
            self.errors += 1
            self.block_errors += 1
        else:
            self.block_ms.append(inference_ms)
        size = len(self.block_ms) + self.block_errors
        if size < self.settings.health_block_frames:
            return None
        s = self.settings
        error_rate = self.block_errors / size
        p99 = _p99(self.block_ms)
        limit_ms = s.health_p99_vs_sla * self.sla_ms
        problems = []
        if error_rate > s.health_max_error_rate:
            problems.append(f"error rate {error_rate:.3f} over {s.health_max_error_rate}")
        if p99 > limit_ms:
            problems.append(f"p99 {p99:.1f} ms over {limit_ms:.0f} ms")
        self.block_ms, self.block_errors = [], 0
        if not problems:
            self.blocks += 1
            self.unhealthy_in_row = 0
            return None
        self.unhealthy_in_row += 1
        if self.unhealthy_in_row < s.health_bad_blocks:
            return None
        in_row = f" ({self.unhealthy_in_row} blocks in a row)" if s.health_bad_blocks > 1 else ""
        return f"health regression over {size} frames: " + "; ".join(problems) + in_row

    def over(self, now: float) -> bool:
        return now - self.started_at >= self.settings.health_watch_s

    def evidence(self, now: float) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "errors": self.errors,
            "blocks_healthy": self.blocks,
            "unhealthy_in_row": self.unhealthy_in_row,
            "block_frames": len(self.block_ms) + self.block_errors,
            "block_size": self.settings.health_block_frames,
            "remaining_s": round(max(0.0, self.settings.health_watch_s - (now - self.started_at))),
        }


def _p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


class HealthWatch:
    """Feeds a ``HealthWindow`` from the pipeline's result tap (on the event loop);
    ``regressed`` gets the reason of the first unhealthy block."""

    def __init__(self, task_name: str, release: str, window: HealthWindow) -> None:
        self.task_name = task_name
        self.release = release  # "name@counter" of the release watched
        self.window = window
        self.regressed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def tap(
        self, name: str, frame: Frame, result: TaskResult | None, error: BaseException | None
    ) -> None:
        if name != self.task_name or self.regressed.done():
            return
        reason = self.window.add(None if result is None else result.inference_ms)
        if reason is not None:
            self.regressed.set_result(reason)
