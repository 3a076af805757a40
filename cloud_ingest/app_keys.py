"""Typed keys for what the app factory stores on the aiohttp application."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from cloud_ingest.catalog import Catalog
from cloud_ingest.metrics import IngestMetrics
from cloud_ingest.settings import IngestSettings

__all__ = ["CATALOG", "CLOCK", "METRICS", "SETTINGS"]

CATALOG: web.AppKey[Catalog] = web.AppKey("yardlink.catalog", Catalog)  # type: ignore[type-abstract]
SETTINGS: web.AppKey[IngestSettings] = web.AppKey("yardlink.settings", IngestSettings)
METRICS: web.AppKey[IngestMetrics] = web.AppKey("yardlink.metrics", IngestMetrics)
# Wall clock (seconds since the epoch); tests may swap it to move time.
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("yardlink.clock")
