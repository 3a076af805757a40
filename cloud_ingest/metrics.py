"""Prometheus metrics of the ingest service: one registry per app (tests run many apps)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["IngestMetrics"]


@dataclass
class IngestMetrics:
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        self.requests = Counter(
            "yardlink_ingest_requests",
            "HTTP requests answered, by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "yardlink_ingest_request_seconds",
            "HTTP request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.batches = Counter(
            "yardlink_ingest_batches",
            "metadata batches by outcome (stored, duplicate, conflict, rejected, overlap)",
            ["stream", "outcome"],
            registry=self.registry,
        )
        self.records = Counter(
            "yardlink_ingest_records",
            "metadata records stored in the lake",
            ["stream"],
            registry=self.registry,
        )
        self.batch_bytes = Counter(
            "yardlink_ingest_batch_bytes", "bytes of stored batches", registry=self.registry
        )
        self.handshakes = Counter(
            "yardlink_ingest_handshakes", "POST /v1/sync answered", registry=self.registry
        )
        self.uploads_completed = Counter(
            "yardlink_ingest_uploads_completed",
            "tus uploads completed",
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "yardlink_ingest_auth_failures",
            "requests refused for a missing, unknown or revoked token",
            registry=self.registry,
        )
