"""Counters and latency windows the daemon reports in ``/v1/status`` and ``telemetry`` records.

Latency is per task, from frame receipt to the result durable in the outbox,
kept in a bounded window; p50/p95/p99 are computed on demand and compared
with the task's p99 SLA.  ``counters()`` is the typed ``TelemetrySnapshot``
(``appliance.status``); ``snapshot()`` its JSON, the body of a telemetry record.
"""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from appliance.status import LatencyPercentiles, TaskCounters, TelemetrySnapshot

__all__ = ["Telemetry"]

_WINDOW = 2048
_CONFIDENCE_BINS = 10


class Telemetry:
    def __init__(self, slas_ms: dict[str, float]) -> None:
        self.slas_ms = dict(slas_ms)
        self._latency: dict[str, deque[float]] = {}
        self.frames: Counter[str] = Counter()
        self.results: Counter[str] = Counter()
        self.violations: Counter[str] = Counter()
        self.class_counts: Counter[str] = Counter()
        self.bad_frames: Counter[str] = Counter()
        self.task_errors: Counter[str] = Counter()
        self.task_last_error: dict[str, str] = {}  # per task, for /v1/status only (stays local)
        self.raw_store_errors: Counter[str] = Counter()  # per camera: original not kept
        self.sample_store_errors: Counter[str] = Counter()  # per camera: sampled copy not stored
        # (camera, reason): a queued frame (HTTP push, synthetic) whose results could not
        # be stored, so it is lost; and a spool frame that could not, left for a retry
        self.frames_not_stored: Counter[tuple[str, str]] = Counter()
        self.spool_retries: Counter[tuple[str, str]] = Counter()
        # (camera, reason): a spool frame the outbox refused for good, its file in failed/
        self.spool_refused: Counter[tuple[str, str]] = Counter()
        self.confidence_hist: dict[str, list[int]] = {}

    def record_result(
        self, task: str, latency_ms: float, confidences: dict[str, list[float]]
    ) -> bool:
        """Record one task result; returns True when it violated the task's SLA."""
        self.results[task] += 1
        self._latency.setdefault(task, deque(maxlen=_WINDOW)).append(latency_ms)
        violated = latency_ms > self.slas_ms.get(task, float("inf"))
        if violated:
            self.violations[task] += 1
        for kind, values in confidences.items():
            self.class_counts[kind] += len(values)
            hist = self.confidence_hist.setdefault(kind, [0] * _CONFIDENCE_BINS)
            for value in values:
                hist[min(_CONFIDENCE_BINS - 1, max(0, int(value * _CONFIDENCE_BINS)))] += 1
        return violated

    def latency(self, task: str) -> dict[str, float | None]:
        """p50/p95/p99 of the task's window, ms (None: no result yet)."""
        return self.percentiles(task).model_dump()

    def percentiles(self, task: str) -> LatencyPercentiles:
        window = self._latency.get(task)
        if not window:
            return LatencyPercentiles(p50=None, p95=None, p99=None)
        p50, p95, p99 = np.percentile(np.fromiter(window, dtype=float), [50, 95, 99])
        return LatencyPercentiles(
            p50=round(float(p50), 2), p95=round(float(p95), 2), p99=round(float(p99), 2)
        )

    def counters(self) -> TelemetrySnapshot:
        """The counters now, typed (``/v1/status`` and the TUI read them)."""
        return TelemetrySnapshot(
            frames=dict(self.frames),
            tasks={
                task: TaskCounters(
                    results=self.results[task],
                    latency_ms=self.percentiles(task),
                    sla_p99_ms=self.slas_ms.get(task),
                    sla_violations=self.violations[task],
                    errors=self.task_errors[task],
                )
                for task in sorted(set(self.slas_ms) | set(self._latency))
            },
            class_counts=dict(self.class_counts),
            confidence_hist={k: list(v) for k, v in self.confidence_hist.items()},
            bad_frames=dict(self.bad_frames),
            raw_store_errors=dict(self.raw_store_errors),
            sample_store_errors=dict(self.sample_store_errors),
            frames_not_stored=_by_camera(self.frames_not_stored),
            spool_retries=_by_camera(self.spool_retries),
            spool_refused=_by_camera(self.spool_refused),
        )

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON values: the body of a telemetry record."""
        return self.counters().model_dump(mode="json")

    def record(self, device_id: str, site_id: str, extra: Mapping[str, object]) -> bytes:
        """A ``telemetry`` outbox record (GENERIC_SCHEMA columns; the outbox assigns the seq)."""
        body = {**self.snapshot(), **extra}
        record = {
            "device_id": device_id,
            "site_id": site_id,
            "seq": 0,
            "event_time": time.time(),
            "model_name": None,
            "model_version": None,
            "kind": "appliance",
            "body": json.dumps(body, separators=(",", ":")),
        }
        return json.dumps(record, separators=(",", ":")).encode()


def _by_camera(counts: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """``{(camera, reason): n}`` as ``{camera: {reason: n}}``."""
    nested: dict[str, dict[str, int]] = {}
    for (camera, reason), count in sorted(counts.items()):
        nested.setdefault(camera, {})[reason] = count
    return nested
