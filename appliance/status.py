"""The appliance's status as typed models: what ``GET /v1/status`` answers, what a
``telemetry`` record's body holds, and what the technician TUI reads.

``TelemetrySnapshot`` is the pipeline's counters (``Telemetry.counters()``), the body
of every ``telemetry`` outbox record; ``ApplianceStatus`` adds what a technician on
site needs (rates, last errors, models, queues, outbox, disk, spool, sync,
readiness).  ``model_dump(mode="json")`` is the wire form; fields are added, never
renamed, so older clients keep working.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from sync.progress import SyncProgress

__all__ = [
    "ApplianceStatus",
    "DiskStatus",
    "LatencyPercentiles",
    "ModelsStatus",
    "OutboxClassStatus",
    "OutboxStatus",
    "ReadinessStatus",
    "SpoolStatus",
    "SupervisedTaskStatus",
    "TaskCounters",
    "TaskStatus",
    "TelemetrySnapshot",
]

PerCamera = dict[str, int]  # camera -> count
PerCameraReason = dict[str, dict[str, int]]  # camera -> reason -> count


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LatencyPercentiles(_Model):
    """Frame receipt to durable result, ms, over the task's recent window (None: no result yet)."""

    p50: float | None
    p95: float | None
    p99: float | None


class TaskCounters(_Model):
    results: int
    latency_ms: LatencyPercentiles
    sla_p99_ms: float | None
    sla_violations: int
    errors: int  # runs that raised


class TelemetrySnapshot(_Model):
    """The pipeline's counters since start; the body of a ``telemetry`` record."""

    frames: PerCamera
    tasks: dict[str, TaskCounters]
    class_counts: dict[str, int]  # detections per kind
    confidence_hist: dict[str, list[int]]  # per kind, ten bins over [0, 1]
    bad_frames: PerCamera
    raw_store_errors: PerCamera  # originals not kept
    sample_store_errors: PerCamera  # sampled copies not stored
    frames_not_stored: PerCameraReason  # queued frames lost: the outbox refused them
    spool_retries: PerCameraReason  # spool frames refused for now, read again later
    spool_refused: PerCameraReason  # spool frames refused for good, moved to failed/


class TaskStatus(TaskCounters):
    rate_per_s: float  # results per second since start
    last_error: str | None


class ModelsStatus(_Model):
    loaded: list[str]
    failed: dict[str, str]  # task -> why it is not loaded


class SpoolStatus(_Model):
    in_flight: int
    stored_not_moved: int
    bad_files: PerCamera  # entries that are not frames, moved to failed/ unread
    retry_in_s: float | None  # the wait after a failure to store
    failures_in_a_row: int
    last_error: str | None
    retries: PerCameraReason  # refusals for now
    refused: PerCameraReason  # refusals for good: files moved to failed/


class OutboxClassStatus(_Model):
    records: int
    bytes: int
    oldest_age_s: float


class OutboxStatus(_Model):
    disk_bytes: int
    classes: dict[str, OutboxClassStatus]
    evictions: dict[str, int]  # records evicted, by reason
    rejections: dict[str, int]  # records refused, by reason
    fsyncs: dict[str, int]  # group fsyncs: in place on the loop / on the thread
    quarantined: list[str]  # databases moved aside at start


class SupervisedTaskStatus(_Model):
    state: str  # running | backing_off | finished
    restarts: int
    failures: int
    consecutive_failures: int
    last_error: str | None
    last_failure_at: float | None  # wall clock
    restart_in_s: float | None


class DiskStatus(_Model):
    free_bytes: int
    total_bytes: int
    blob_bytes: int


class ReadinessStatus(_Model):
    ready: bool  # required models loaded and the outbox open (``GET /healthz``)
    reason: str | None


class ApplianceStatus(_Model):
    """``GET /v1/status``."""

    device_id: str
    uptime_s: float
    tasks: dict[str, TaskStatus]
    models: ModelsStatus
    frames: PerCamera
    bad_frames: PerCamera
    raw_store_errors: PerCamera
    sample_store_errors: PerCamera
    frames_not_stored: PerCameraReason
    spool: SpoolStatus | None  # None: no spool directory configured
    dropped_frames: PerCamera  # queue full
    queue_depths: PerCamera
    outbox: OutboxStatus | None  # None: not open (before start)
    supervised: dict[str, SupervisedTaskStatus]  # background tasks
    raw_frames_indexed: int
    disk: DiskStatus
    sync: SyncProgress | None  # None: no cloud configured
    readiness: ReadinessStatus
