"""The outbox's stats as the technician and the monitoring see them.

``outbox_status`` is the ``outbox`` part of ``GET /v1/status``; ``OutboxCollector``
exposes the same figures on ``GET /metrics``, read from ``Outbox.stats()`` at each
scrape (one seek per class for the oldest record, one directory listing for the
size on disk), so nothing is kept twice and nothing goes stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from appliance.counter_metrics import counter_family
from sync.outbox import OutboxStats

__all__ = ["OutboxCollector", "outbox_status"]


def outbox_status(stats: OutboxStats) -> dict[str, Any]:
    """Depth, bytes and oldest age per class; evictions and refused records by reason."""
    return {
        "disk_bytes": stats.disk_bytes,
        "classes": {
            str(stream): {
                "records": usage.records,
                "bytes": usage.bytes,
                "oldest_age_s": round(usage.oldest_age_s, 1),
            }
            for stream, usage in stats.per_class.items()
        },
        "evictions": dict(stats.evictions),  # records evicted, by reason
        "rejections": dict(stats.rejections),  # records refused, by reason
        "fsyncs": dict(stats.fsyncs),  # group fsyncs: in place on the loop / on the thread
        "quarantined": list(stats.quarantined),  # databases moved aside at start
    }


class OutboxCollector(Collector):
    """``yardlink_outbox_*`` metrics; nothing while the daemon has no outbox open."""

    def __init__(self, stats: Callable[[], OutboxStats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        if stats is None:
            return
        records = GaugeMetricFamily(
            "yardlink_outbox_records", "records waiting, per class", labels=["class"]
        )
        nbytes = GaugeMetricFamily(
            "yardlink_outbox_bytes", "bytes of records waiting, per class", labels=["class"]
        )
        oldest = GaugeMetricFamily(
            "yardlink_outbox_oldest_age_seconds",
            "age of the oldest record waiting, per class (0 when empty)",
            labels=["class"],
        )
        for stream, usage in stats.per_class.items():
            records.add_metric([str(stream)], usage.records)
            nbytes.add_metric([str(stream)], usage.bytes)
            oldest.add_metric([str(stream)], usage.oldest_age_s)
        yield records
        yield nbytes
        yield oldest
        yield GaugeMetricFamily(
            "yardlink_outbox_disk_bytes", "size of the outbox database on disk", stats.disk_bytes
        )
        yield counter_family(
            "yardlink_outbox_evictions", "records evicted", ("reason",), stats.evictions
        )
        yield counter_family(
            "yardlink_outbox_rejections", "records refused", ("reason",), stats.rejections
        )
        yield counter_family(
            "yardlink_outbox_fsyncs",
            "group fsyncs, by where they ran (in_place: event loop; on_thread: writer)",
            ("placement",),
            stats.fsyncs,
        )
