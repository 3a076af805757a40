"""The daemon's /metrics: the waits of model calls for urgent work (the face read)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from appliance.inference.urgent_work import UrgentWork
from appliance.metrics import DaemonMetrics, UrgentWaits


def test_urgent_waits_are_counted_with_their_time() -> None:
    urgent = UrgentWork()
    registry = CollectorRegistry()
    registry.register(UrgentWaits(urgent))
    assert registry.get_sample_value("yardlink_inference_urgent_waits_total") == 0
    with urgent.running():
        urgent.let_pass(0.05)  # waits out its bound
    urgent.let_pass(0.05)  # nothing urgent: no wait, not counted
    assert registry.get_sample_value("yardlink_inference_urgent_waits_total") == 1
    seconds = registry.get_sample_value("yardlink_inference_urgent_wait_seconds_total")
    assert seconds is not None and 0.05 <= seconds < 5.0


def test_the_daemons_metrics_carry_them() -> None:
    metrics = DaemonMetrics(queue_depth=lambda: 0.0, outbox_stats=lambda: None)
    text = generate_latest(metrics.registry).decode()
    assert "yardlink_inference_urgent_waits_total" in text
    assert "yardlink_inference_urgent_wait_seconds_total" in text
