"""The sync engine's link and delivery state on ``GET /metrics``.

``SyncCollector`` reads ``SyncEngine.progress()`` (the same model ``GET /v1/sync``
serves) at each scrape, so the JSON and the metrics never disagree and nothing is
kept twice.  Units are Prometheus base units: seconds, bytes, bits per second for
the link (as the cap is configured).  Pending records and bytes per class are the
outbox's (``yardlink_outbox_records`` / ``_bytes``, ``appliance.outbox_report``),
not repeated here.  Nothing is exported while the daemon has no sync engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sync.link import LinkState
from sync.progress import SyncProgress

__all__ = ["SyncCollector", "sync_families"]


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _link_families(progress: SyncProgress) -> Iterator[Metric]:
    yield _gauge(
        "yardlink_sync_link_up",
        "1 while the last exchange with the cloud succeeded (online), else 0",
        1.0 if progress.link is LinkState.ONLINE else 0.0,
    )
    state = GaugeMetricFamily(
        "yardlink_sync_link_state", "1 for the link's current state", labels=["state"]
    )
    for candidate in LinkState:
        state.add_metric([str(candidate)], 1.0 if progress.link is candidate else 0.0)
    yield state
    yield _gauge("yardlink_sync_running", "1 while the engine runs", float(progress.running))
    yield _gauge("yardlink_sync_paused", "1 while a technician paused it", float(progress.paused))
    yield _gauge(
        "yardlink_sync_consecutive_failures",
        "failed exchanges in a row (0 after a success)",
        progress.consecutive_failures,
    )
    if progress.bandwidth_bps is not None:
        yield _gauge(
            "yardlink_sync_link_bandwidth_bits_per_second",
            "measured upload throughput, smoothed",
            progress.bandwidth_bps,
        )
    if progress.rtt_ms is not None:
        yield _gauge(
            "yardlink_sync_link_rtt_seconds",
            "measured handshake round trip, smoothed",
            progress.rtt_ms / 1000,
        )
    if progress.bandwidth_cap_bps is not None:
        yield _gauge(
            "yardlink_sync_bandwidth_cap_bits_per_second",
            "upload cap in force (configured or set by a technician)",
            progress.bandwidth_cap_bps,
        )
    if progress.last_handshake_at is not None:
        yield _gauge(
            "yardlink_sync_last_handshake_timestamp_seconds",
            "epoch seconds of the last successful handshake with the cloud",
            progress.last_handshake_at,
        )
    if progress.clock_skew_s is not None:
        yield _gauge(
            "yardlink_sync_clock_skew_seconds",
            "this clock minus the cloud's, at the last handshake",
            progress.clock_skew_s,
        )


def _gauges(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=["class"])


def _counters(name: str, documentation: str) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, labels=["class"])


def _class_families(progress: SyncProgress) -> Iterator[Metric]:
    sent_bytes = _counters(
        "yardlink_sync_sent_bytes",
        "bytes put on the wire since start, per class (resends included)",
    )
    sent_records = _counters("yardlink_sync_sent_records", "records delivered since start")
    sent_today = _gauges(
        "yardlink_sync_sent_today_bytes",
        "bytes sent this UTC day, per class (survives restarts)",
    )
    budget_left = _gauges(
        "yardlink_sync_budget_left_bytes",
        "daily budget left this UTC day (only classes with a budget)",
    )
    last_sent = _gauges(
        "yardlink_sync_last_success_timestamp_seconds",
        "epoch seconds of the last delivery to the cloud, per class (only once one happened)",
    )
    stalled = _gauges("yardlink_sync_stalled", "1 while the class is held (see /v1/sync)")
    skipped = _gauges(
        "yardlink_sync_skipped_records",
        "raw records passed over until the next start",
    )
    given_up = _counters(
        "yardlink_sync_given_up_records",
        "raw records settled unsent for good (a damaged copy)",
    )
    for stream, item in progress.classes.items():
        label = [str(stream)]
        sent_bytes.add_metric(label, item.sent_bytes)
        sent_records.add_metric(label, item.sent_records)
        sent_today.add_metric(label, item.sent_today_bytes)
        if item.budget_left_bytes is not None:
            budget_left.add_metric(label, item.budget_left_bytes)
        if item.last_sent_at is not None:
            last_sent.add_metric(label, item.last_sent_at)
        stalled.add_metric(label, 0.0 if item.stalled is None else 1.0)
        skipped.add_metric(label, item.skipped_records)
        given_up.add_metric(label, item.given_up_records)
    yield from (sent_bytes, sent_records, sent_today, budget_left, last_sent)
    yield from (stalled, skipped, given_up)


def sync_families(progress: SyncProgress) -> Iterator[Metric]:
    """Every ``yardlink_sync_*`` family for one progress snapshot."""
    yield from _link_families(progress)
    yield from _class_families(progress)
    yield _counter(
        "yardlink_sync_resent_bytes",
        "upload bytes sent more than once (after cuts)",
        progress.resent_bytes,
    )
    yield _counter(
        "yardlink_sync_background_failures",
        "failures met off the main path (each logged)",
        progress.background_failures,
    )
    yield _counter(
        "yardlink_sync_raw_request_failures",
        "cloud raw requests the blob source failed to resolve",
        progress.raw_request_failures,
    )
    yield _gauge(
        "yardlink_sync_unknown_raw_requests",
        "cloud raw requests for records this device does not have",
        progress.unknown_raw_requests,
    )


class SyncCollector(Collector):
    """``yardlink_sync_*`` metrics; nothing while ``progress()`` returns None (no engine)."""

    def __init__(self, progress: Callable[[], SyncProgress | None]) -> None:
        self._progress = progress

    def collect(self) -> Iterator[Metric]:
        progress = self._progress()
        if progress is not None:
            yield from sync_families(progress)
