"""Counters the daemon already keeps (``collections.Counter``), exposed on ``/metrics``.

The spool's and the pipeline's failure counts live in ``Telemetry`` and the spool
watcher for ``/v1/status``; ``CountersCollector`` reads the same counters at each
scrape, so the two views never disagree and nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CounterSource", "CountersCollector", "counter_family"]

# a Counter keyed by one label value (a str) or by a tuple with one value per label
# (Any: Mapping is invariant in its key, and Counter[tuple[str, str]] must fit)
Counts = Mapping[Any, int]


@dataclass(frozen=True, slots=True)
class CounterSource:
    name: str  # without ``_total`` (prometheus_client adds it)
    documentation: str
    labels: tuple[str, ...]
    read: Callable[[], Counts]


def counter_family(
    name: str, documentation: str, labels: tuple[str, ...], counts: Counts
) -> Metric:
    """One counter family, a sample per key (sorted, so scrapes are stable)."""
    family = CounterMetricFamily(name, documentation, labels=list(labels))
    for key, count in sorted(counts.items()):
        family.add_metric([key] if isinstance(key, str) else list(key), count)
    return family


class CountersCollector(Collector):
    def __init__(self, sources: list[CounterSource]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self._sources:
            yield counter_family(source.name, source.documentation, source.labels, source.read())
