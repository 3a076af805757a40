"""``/v1/status`` JSON -> what the dashboard shows, and the alerts: pure, no I/O.

The status shape changes as the daemon grows, so every field is read with a
default: a missing or mistyped field shows as unknown (``None``), never as an
error.  ``read_status`` takes any JSON value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

__all__ = [
    "CLASSES",
    "Alert",
    "ClassRow",
    "ModelRow",
    "Severity",
    "StatusView",
    "TaskRow",
    "UploadRow",
    "read_models",
    "read_status",
]

CLASSES = ("critical", "events", "telemetry", "raw_requested", "raw_sampled")
DISK_WARN_FREE = 0.10  # share of the data disk still free below which we warn
DISK_FAIL_FREE = 0.03
CLOCK_SKEW_WARN_S = 30.0  # device clock vs the cloud's, from the last handshake


class Severity(StrEnum):
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Alert:
    code: str  # stable name: disk_full, sla_broken, outbox_refusing, ...
    severity: Severity
    message: str  # what is wrong, with the figure
    action: str  # what the technician does about it


@dataclass(frozen=True, slots=True)
class ClassRow:
    name: str
    records: int | None
    bytes: int | None
    oldest_age_s: float | None
    sent_today_bytes: int | None
    budget_left_bytes: int | None
    stalled: str | None


@dataclass(frozen=True, slots=True)
class TaskRow:
    name: str
    rate_per_s: float | None
    p50_ms: float | None
    p99_ms: float | None
    sla_p99_ms: float | None
    violations: int | None
    errors: int | None
    last_error: str | None

    @property
    def over_sla(self) -> bool:
        return (
            self.p99_ms is not None
            and self.sla_p99_ms is not None
            and (self.p99_ms > self.sla_p99_ms)
        )


@dataclass(frozen=True, slots=True)
class UploadRow:
    sha256: str
    offset: int
    length: int
    rate_bps: float | None

    @property
    def fraction(self) -> float:
        return min(1.0, self.offset / self.length) if self.length > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One task's model from ``GET /v1/models`` (present when model updates are on)."""

    task: str
    version: str | None
    serving: str | None  # slot a / b, or pinned
    on_trial: bool
    rolled_back: str | None  # the reason of the last verdict when it rolled back
    watching: bool = False  # committed, its health watch running


@dataclass(frozen=True, slots=True)
class StatusView:
    device_id: str | None = None
    uptime_s: float | None = None
    sync_configured: bool = False
    link: str | None = None  # online / degraded / offline
    paused: bool | None = None
    rate_bps: float | None = None  # measured upload rate, bits per second
    cap_bps: float | None = None
    cap_until: float | None = None
    rtt_ms: float | None = None
    last_handshake_at: float | None = None
    last_error: str | None = None
    outbox_disk_bytes: int | None = None
    outbox_capacity_bytes: int | None = None  # the bars' 100 %
    classes: tuple[ClassRow, ...] = ()
    evictions: Mapping[str, int] = field(default_factory=dict)
    rejections: Mapping[str, int] = field(default_factory=dict)
    quarantined: tuple[str, ...] = ()
    pending_bytes: int = 0
    drain_s: float | None = None  # backlog / current rate; None: unknown or not draining
    upload: UploadRow | None = None
    tasks: tuple[TaskRow, ...] = ()
    models_loaded: tuple[str, ...] = ()
    models_failed: Mapping[str, str] = field(default_factory=dict)
    model_versions: Mapping[str, str] = field(default_factory=dict)  # task -> version
    model_rows: tuple[ModelRow, ...] = ()  # from /v1/models when updates are on
    disk_free_bytes: int | None = None
    disk_total_bytes: int | None = None
    alerts: tuple[Alert, ...] = ()


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _num(value: object) -> float | None:
    """A finite number, else None (JSON may carry Infinity, NaN, or 1e400)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _int(value: object) -> int | None:
    number = _num(value)
    return None if number is None else int(number)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _classes(outbox: dict[str, Any], sync: dict[str, Any]) -> tuple[ClassRow, ...]:
    depth, progress = _dict(outbox.get("classes")), _dict(sync.get("classes"))
    rows = []
    for name in CLASSES:
        here, sent = _dict(depth.get(name)), _dict(progress.get(name))
        rows.append(
            ClassRow(
                name=name,
                records=_int(here.get("records", sent.get("pending_records"))),
                bytes=_int(here.get("bytes", sent.get("pending_bytes"))),
                oldest_age_s=_num(here.get("oldest_age_s", sent.get("oldest_age_s"))),
                sent_today_bytes=_int(sent.get("sent_today_bytes")),
                budget_left_bytes=_int(sent.get("budget_left_bytes")),
                stalled=_str(sent.get("stalled")),
            )
        )
    return tuple(rows)


def _tasks(raw: dict[str, Any]) -> tuple[TaskRow, ...]:
    rows = []
    for name, entry in sorted(raw.items()):
        entry = _dict(entry)
        latency = _dict(entry.get("latency_ms"))
        rows.append(
            TaskRow(
                name=str(name),
                rate_per_s=_num(entry.get("rate_per_s")),
                p50_ms=_num(latency.get("p50")),
                p99_ms=_num(latency.get("p99")),
                sla_p99_ms=_num(entry.get("sla_p99_ms")),
                violations=_int(entry.get("sla_violations")),
                errors=_int(entry.get("errors")),
                last_error=_str(entry.get("last_error")),
            )
        )
    return tuple(rows)


def _upload(raw: object) -> UploadRow | None:
    upload = _dict(raw)
    sha, offset, length = (
        _str(upload.get("sha256")),
        _int(upload.get("offset")),
        _int(upload.get("length")),
    )
    if sha is None or offset is None or length is None:
        return None
    return UploadRow(sha, offset, length, _num(upload.get("rate_bps")))


def _counts(raw: object) -> dict[str, int]:
    return {str(k): n for k, v in _dict(raw).items() if (n := _int(v)) is not None}


def read_models(raw: object) -> tuple[ModelRow, ...]:
    """The rows of a ``GET /v1/models`` body (any JSON value is accepted)."""
    rows = []
    for task, entry in sorted(_dict(raw).items()):
        entry = _dict(entry)
        verdict = _dict(entry.get("last_verdict"))
        rolled_back = None
        if verdict.get("commit") is False:
            rolled_back = _str(verdict.get("reason")) or "no reason given"
        rows.append(
            ModelRow(
                task=str(task),
                version=_str(entry.get("model_version")),
                serving=_str(entry.get("serving")),
                on_trial=entry.get("on_trial") is True,
                rolled_back=rolled_back,
                watching=isinstance(entry.get("health"), dict),
            )
        )
    return tuple(rows)


def read_status(
    raw: object, *, sync_extra: Mapping[str, Any] | None = None, models: object = None
) -> StatusView:
    """The dashboard's view of a ``/v1/status`` body (any JSON value is accepted), with
    ``models`` the last ``/v1/models`` body (None: model updates are off)."""
    status = _dict(raw)
    sync = _dict(status.get("sync"))
    outbox = _dict(status.get("outbox"))
    disk = _dict(status.get("disk"))
    loaded = _dict(status.get("models"))
    classes = _classes(outbox, sync)
    rate = _num(sync.get("bandwidth_bps"))
    upload = _upload(sync.get("upload"))
    if upload is not None and upload.rate_bps is not None:
        rate = upload.rate_bps
    pending = sum(row.bytes or 0 for row in classes)
    drain = pending * 8 / rate if rate and pending else (0.0 if sync and not pending else None)
    disk_free, disk_total = _int(disk.get("free_bytes")), _int(disk.get("total_bytes"))
    outbox_bytes = _int(outbox.get("disk_bytes"))
    capacity = _int(outbox.get("max_bytes"))
    if capacity is None and disk_free is not None and outbox_bytes is not None:
        capacity = outbox_bytes + disk_free  # what the outbox could still grow to
    versions = {
        str(k): str(v) for k, v in _dict(loaded.get("versions")).items() if isinstance(v, str)
    }
    view = StatusView(
        device_id=_str(status.get("device_id")),
        uptime_s=_num(status.get("uptime_s")),
        sync_configured=bool(sync),
        link=_str(sync.get("link")),
        paused=sync.get("paused") if isinstance(sync.get("paused"), bool) else None,
        rate_bps=rate,
        cap_bps=_num(sync.get("bandwidth_cap_bps")),
        cap_until=_num(_dict(sync_extra).get("bandwidth_cap_until")),
        rtt_ms=_num(sync.get("rtt_ms")),
        last_handshake_at=_num(sync.get("last_handshake_at")),
        last_error=_str(sync.get("last_error")),
        outbox_disk_bytes=outbox_bytes,
        outbox_capacity_bytes=capacity,
        classes=classes,
        evictions=_counts(outbox.get("evictions")),
        rejections=_counts(outbox.get("rejections")),
        quarantined=tuple(str(q) for q in outbox.get("quarantined") or () if q is not None)
        if isinstance(outbox.get("quarantined"), list)
        else (),
        pending_bytes=pending,
        drain_s=drain,
        upload=upload,
        tasks=_tasks(_dict(status.get("tasks"))),
        models_loaded=tuple(str(m) for m in loaded.get("loaded") or () if isinstance(m, str))
        if isinstance(loaded.get("loaded"), list)
        else (),
        models_failed={str(k): str(v) for k, v in _dict(loaded.get("failed")).items()},
        model_versions=versions,
        model_rows=read_models(models),
        disk_free_bytes=disk_free,
        disk_total_bytes=disk_total,
    )
    return _with_alerts(view, status, sync)


def _with_alerts(view: StatusView, status: dict[str, Any], sync: dict[str, Any]) -> StatusView:
    return replace(view, alerts=tuple(_alerts(view, status, sync)))


def _alerts(view: StatusView, status: dict[str, Any], sync: dict[str, Any]) -> list[Alert]:
    alerts: list[Alert] = []
    if view.disk_free_bytes is not None and view.disk_total_bytes:
        free = view.disk_free_bytes / view.disk_total_bytes
        if free < DISK_WARN_FREE:
            alerts.append(
                Alert(
                    "disk_full",
                    Severity.FAIL if free < DISK_FAIL_FREE else Severity.WARN,
                    f"data disk nearly full: {free:.1%} free",
                    "free space on the data disk (old files, logs); raw samples are evicted"
                    " first; check the link so the outbox drains",
                )
            )
    for task in view.tasks:
        if task.over_sla:
            alerts.append(
                Alert(
                    "sla_broken",
                    Severity.WARN,
                    f"{task.name}: p99 {task.p99_ms:.0f} ms over its SLA {task.sla_p99_ms:.0f} ms",
                    "check the gateway's CPU load and temperature; fewer cameras or a lower"
                    " frame rate bring the latency back",
                )
            )
    refusing = {k: v for k, v in view.rejections.items() if v}
    not_stored = _dict(status.get("frames_not_stored"))
    if refusing or not_stored:
        what = ", ".join(f"{k} {v}" for k, v in sorted(refusing.items())) or "frames not stored"
        alerts.append(
            Alert(
                "outbox_refusing",
                Severity.FAIL,
                f"outbox refusing records ({what})",
                "the outbox is full or the disk is: get the link up (sync now), raise the"
                " bandwidth cap, or free disk space",
            )
        )
    if view.quarantined:
        alerts.append(
            Alert(
                "quarantined_db",
                Severity.FAIL,
                f"outbox database quarantined: {', '.join(view.quarantined)}",
                "the damaged copy was set aside and a fresh outbox opened; export a support"
                " bundle and send it with the quarantined directory to support",
            )
        )
    skew = _num(sync.get("clock_skew_s"))
    if skew is not None and abs(skew) > CLOCK_SKEW_WARN_S:
        alerts.append(
            Alert(
                "clock_skew",
                Severity.WARN,
                f"device clock {skew:+.0f} s from the cloud's",
                "enable NTP (timedatectl set-ntp true) or set the time; event times are"
                " taken from this clock",
            )
        )
    for row in view.model_rows:
        if row.rolled_back is not None:
            alerts.append(
                Alert(
                    "update_rolled_back",
                    Severity.WARN,
                    f"model update of {row.task} rolled back: {row.rolled_back}",
                    "the previous model version runs; export a support bundle and tell the"
                    " data team which version failed",
                )
            )
    for name, update in _dict(status.get("updates")).items():
        state = _str(_dict(update).get("state"))
        if state in ("rolled_back", "failed"):
            alerts.append(
                Alert(
                    "update_rolled_back",
                    Severity.WARN,
                    f"model update of {name} {state.replace('_', ' ')}",
                    "the previous model version runs; see the support bundle's logs and"
                    " tell the data team which version failed",
                )
            )
    for name, why in view.models_failed.items():
        alerts.append(
            Alert(
                "model_not_loaded",
                Severity.FAIL,
                f"model {name} not loaded: {why}",
                "run `yardlink appliance check --config FILE` (models present, sha256)",
            )
        )
    readiness = _dict(status.get("readiness"))
    if readiness.get("ready") is False:
        alerts.append(
            Alert(
                "not_ready",
                Severity.FAIL,
                f"appliance not ready: {_str(readiness.get('reason')) or 'no reason given'}",
                "run `yardlink appliance check --config FILE`; the reason names what is missing",
            )
        )
    for name, raw_task in sorted(_dict(status.get("supervised")).items()):
        supervised = _dict(raw_task)
        if supervised.get("state") == "backing_off":
            alerts.append(
                Alert(
                    "task_failing",
                    Severity.WARN,
                    f"background task {name} failing: {_str(supervised.get('last_error')) or '?'}",
                    "it restarts by itself; fix what the error names (permissions, a path)",
                )
            )
    if view.link == "offline":
        alerts.append(
            Alert(
                "link_offline",
                Severity.WARN,
                "cloud link offline",
                "check the uplink (cable, modem, APN); the outbox keeps everything meanwhile",
            )
        )
    return alerts
