"""Prometheus metrics of the daemon, on its own registry (served at ``GET /metrics``)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from appliance.outbox_report import OutboxCollector
from sync.outbox import OutboxStats

__all__ = ["DaemonMetrics"]

_LATENCY_BUCKETS_MS = (10, 25, 50, 100, 200, 300, 500, 1000, 2000, 5000)


class DaemonMetrics:
    def __init__(
        self, queue_depth: Callable[[], float], outbox_stats: Callable[[], OutboxStats | None]
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(OutboxCollector(outbox_stats))
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
            "yardlink_task_latency_ms",
            "frame receipt to result durable in the outbox, ms",
            ["task"],
            registry=self.registry,
            buckets=_LATENCY_BUCKETS_MS,
        )
        self.queue_depth = Gauge("yardlink_queue_depth", "frames queued", registry=self.registry)
        self.queue_depth.set_function(queue_depth)
