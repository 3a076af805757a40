"""Prometheus metrics of the daemon, on its own registry (served at ``GET /metrics``).

Durations are in seconds (``_seconds``), as Prometheus expects; the outbox's and the
sync engine's state are read at each scrape (``appliance.outbox_report``,
``appliance.sync_metrics``); ``yardlink_build_info`` says which build answers.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from appliance.inference.urgent_work import URGENT, UrgentWork
from appliance.outbox_report import OutboxCollector
from appliance.sync_metrics import SyncCollector
from sync.outbox import OutboxStats
from sync.progress import SyncProgress

__all__ = ["DaemonMetrics", "UrgentWaits", "build_version"]


def build_version() -> str:
    """The installed yardlink distribution's version ("unknown" when run from a bare tree)."""
    try:
        return metadata.version("yardlink")
    except metadata.PackageNotFoundError:
        return "unknown"


class UrgentWaits(Collector):
    """How often and how long model calls waited for urgent work (gate OCR for the face
    read, ``appliance.inference.urgent_work``), read at each scrape."""

    def __init__(self, urgent: UrgentWork = URGENT) -> None:
        self._urgent = urgent

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "yardlink_inference_urgent_waits",
            "model calls that waited for an urgent task's run (gate OCR for the face read)",
            value=self._urgent.waits,
        )
        yield CounterMetricFamily(
            "yardlink_inference_urgent_wait_seconds",
            "time model calls spent waiting for urgent tasks' runs",
            value=self._urgent.waited_s,
        )


_LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)


class DaemonMetrics:
    def __init__(
        self,
        queue_depth: Callable[[], float],
        outbox_stats: Callable[[], OutboxStats | None],
        sync_progress: Callable[[], SyncProgress | None] = lambda: None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(OutboxCollector(outbox_stats))
        self.registry.register(SyncCollector(sync_progress))
        self.registry.register(UrgentWaits())
        Info("yardlink_build", "the build answering", registry=self.registry).info(
            {"version": build_version(), "python": platform.python_version()}
        )
        self.frames = Counter(
            "yardlink_frames", "frames accepted", ["camera"], registry=self.registry
        )
        self.dropped = Counter(
            "yardlink_frames_dropped",
            "frames dropped because the camera's queue was full",
            ["camera"],
            registry=self.registry,
        )
        self.not_stored = Counter(
            "yardlink_frames_not_stored",
            "queued frames lost because their results could not be stored in the outbox",
            ["camera", "reason"],
            registry=self.registry,
        )
        self.bad = Counter(
            "yardlink_bad_frames", "frames refused", ["reason"], registry=self.registry
        )
        self.latency = Histogram(
            "yardlink_task_latency_seconds",
            "frame receipt to result durable in the outbox",
            ["task"],
            registry=self.registry,
            buckets=_LATENCY_BUCKETS_S,
        )
        self.queue_depth = Gauge("yardlink_queue_depth", "frames queued", registry=self.registry)
        self.queue_depth.set_function(queue_depth)
