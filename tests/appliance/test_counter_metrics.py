"""Counters kept for /v1/status, read by /metrics at each scrape."""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry, generate_latest

from appliance.counter_metrics import CountersCollector, CounterSource


def test_counters_are_read_at_each_scrape_with_one_or_two_labels() -> None:
    by_camera: Counter[str] = Counter()
    by_camera_and_reason: Counter[tuple[str, str]] = Counter()
    registry = CollectorRegistry()
    registry.register(
        CountersCollector(
            [
                CounterSource("t_bad", "bad", ("camera",), lambda: by_camera),
                CounterSource(
                    "t_refused", "refused", ("camera", "reason"), lambda: by_camera_and_reason
                ),
            ]
        )
    )
    assert "t_bad_total{" not in generate_latest(registry).decode()
    by_camera["gate-in"] += 2
    by_camera_and_reason[("gate-out", "RecordRejected")] += 1
    text = generate_latest(registry).decode()
    assert 't_bad_total{camera="gate-in"} 2.0' in text
    assert 't_refused_total{camera="gate-out",reason="RecordRejected"} 1.0' in text
