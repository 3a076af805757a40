"""The daemon's status, gathered from its parts into ``appliance.status.ApplianceStatus``,
and the same failure counts on ``/metrics``."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from appliance.counter_metrics import CountersCollector, CounterSource
from appliance.outbox_report import outbox_status
from appliance.sources.spool import SpoolWatcher
from appliance.status import (
    ApplianceStatus,
    DiskStatus,
    ModelsStatus,
    OutboxStatus,
    ReadinessStatus,
    SpoolStatus,
    SupervisedTaskStatus,
    TaskStatus,
)
from appliance.telemetry import Telemetry

if TYPE_CHECKING:
    from appliance.daemon import Daemon

__all__ = ["failure_counters", "status_of"]


def status_of(daemon: Daemon) -> ApplianceStatus:
    """The daemon's status now (parts not built yet read as empty)."""
    uptime = max(1e-6, time.time() - daemon.started_at)
    telemetry = daemon.telemetry
    counters = telemetry.counters()
    tasks = {
        name: TaskStatus(
            **entry.model_dump(),
            rate_per_s=round(telemetry.results[name] / uptime, 3),
            last_error=telemetry.task_last_error.get(name),
        )
        for name, entry in counters.tasks.items()
    }
    spool = daemon.spool
    outbox = daemon.outbox
    raw_frames = daemon._raw_frames
    blobs = daemon._blobs
    disk = shutil.disk_usage(daemon.data_dir)
    return ApplianceStatus(
        device_id=daemon.config.site.device_id,
        uptime_s=round(uptime, 1),
        tasks=tasks,
        models=ModelsStatus(loaded=sorted(daemon.tasks), failed=dict(daemon.model_failures)),
        frames=counters.frames,
        bad_frames=counters.bad_frames,
        raw_store_errors=counters.raw_store_errors,
        sample_store_errors=counters.sample_store_errors,
        frames_not_stored=counters.frames_not_stored,
        spool=None
        if spool is None
        else SpoolStatus.model_validate(
            {
                **spool.status(),
                "retries": counters.spool_retries,
                "refused": counters.spool_refused,
            }
        ),
        dropped_frames=dict(daemon.queues.dropped),
        queue_depths=daemon.queues.depths(),
        outbox=None
        if outbox is None
        else OutboxStatus.model_validate(outbox_status(outbox.stats())),
        supervised={
            name: SupervisedTaskStatus.model_validate(state)
            for name, state in daemon.supervisor.status().items()
        },
        raw_frames_indexed=0 if raw_frames is None else len(raw_frames),
        disk=DiskStatus(
            free_bytes=disk.free,
            total_bytes=disk.total,
            blob_bytes=0 if blobs is None else blobs.disk_bytes(),
        ),
        sync=None if daemon.sync_engine is None else daemon.sync_engine.progress(),
        readiness=ReadinessStatus(ready=daemon.readiness.ready, reason=daemon.readiness.reason),
    )


def failure_counters(
    telemetry: Telemetry, spool: Callable[[], SpoolWatcher | None]
) -> CountersCollector:
    """What ``/v1/status`` counts of the spool and the pipeline, also on ``/metrics``
    (read at each scrape)."""
    return CountersCollector(
        [
            CounterSource(
                "yardlink_spool_refused",
                "spool frames the outbox refused for good (moved to failed/)",
                ("camera", "reason"),
                lambda: telemetry.spool_refused,
            ),
            CounterSource(
                "yardlink_spool_retries",
                "spool frames the outbox refused for now (read again after a wait)",
                ("camera", "reason"),
                lambda: telemetry.spool_retries,
            ),
            CounterSource(
                "yardlink_spool_bad_files",
                "spool entries that are not frames (moved to failed/ unread)",
                ("camera",),
                lambda: {} if (watcher := spool()) is None else watcher.bad_files,
            ),
            CounterSource(
                "yardlink_sample_store_errors",
                "sampled blurred copies that could not be stored",
                ("camera",),
                lambda: telemetry.sample_store_errors,
            ),
        ]
    )
