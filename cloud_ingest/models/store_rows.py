"""The rows of the model tables as both stores read and write them: the records,
the SELECT lists and row mapping, the values of each INSERT, the audit events,
and the SQL both dialects state alike, written once with neutral placeholders
(``sql_dialects.py``) that ``store.py`` (SQLite) and ``store_postgres.py``
render in their own dialect."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cloud_ingest.catalog_rows import Row
from cloud_ingest.models.rollout import Rollout, RolloutPhase, Transition
from cloud_ingest.sql_dialects import Read, Statement, first
from sync.protocol.releases import RolloutPlan

__all__ = [
    "OUTCOME_SELECT",
    "RELEASE_SELECT",
    "DeviceOutcome",
    "ReleaseRecord",
    "active_rollout",
    "device_outcomes_read",
    "dump_rollout",
    "held_manifest",
    "held_outcome",
    "highest_counter_read",
    "load_rollout",
    "outcome_audit",
    "outcome_row",
    "outcomes_read",
    "release_audit",
    "release_read",
    "release_row",
    "release_values",
    "releases_read",
    "rollout_audit",
    "rollout_read",
    "rollouts_read",
]


@dataclass(frozen=True, slots=True)
class ReleaseRecord:
    name: str
    version: str
    counter: int
    sha256: str
    size: int
    keyid: str
    manifest: bytes  # the signed envelope exactly as published
    published_by: str
    published_at: float


@dataclass(frozen=True, slots=True)
class DeviceOutcome:
    device_id: str
    name: str
    version: str
    counter: int
    result: str
    check: str | None
    reason: str | None


RELEASE_SELECT = (
    "SELECT name, version, counter, sha256, size, keyid, manifest, published_by, published_at"
    " FROM model_releases"
)


OUTCOME_SELECT = (
    "SELECT device_id, name, version, counter, result, check_name, reason FROM model_outcomes"
)

# The audit events of both stores: (actor, action, subject, detail) for ``insert_audit``.
AuditEvent = tuple[str, str, str, dict[str, Any]]


def release_audit(release: ReleaseRecord, detail: dict[str, Any]) -> AuditEvent:
    return release.published_by, "model.publish", f"{release.name}/{release.version}", detail


def rollout_audit(rollout: Rollout, transition: Transition) -> AuditEvent:
    detail = {**transition.detail, "counter": rollout.counter}
    return transition.actor, transition.action, f"{rollout.name}/{rollout.version}", detail


def outcome_audit(o: DeviceOutcome) -> AuditEvent:
    """Audited by the device; ``check`` and ``reason`` only when set."""
    detail: dict[str, Any] = {"result": o.result, "counter": o.counter}
    detail |= {k: v for k, v in (("check", o.check), ("reason", o.reason)) if v}
    return o.device_id, "model.outcome", f"{o.name}/{o.version}", detail


def release_values(release: ReleaseRecord) -> tuple[Any, ...]:
    """The columns of ``model_releases`` in the order of ``RELEASE_SELECT``."""
    return (
        release.name,
        release.version,
        release.counter,
        release.sha256,
        release.size,
        release.keyid,
        release.manifest,
        release.published_by,
        release.published_at,
    )


def release_row(row: Row) -> ReleaseRecord:
    return ReleaseRecord(
        row[0], row[1], row[2], row[3], row[4], row[5], bytes(row[6]), row[7], row[8]
    )


def outcome_row(row: Row) -> DeviceOutcome:
    """A row of ``OUTCOME_SELECT``."""
    return DeviceOutcome(row[0], row[1], row[2], row[3], row[4], row[5], row[6])


def dump_rollout(rollout: Rollout) -> str:
    return json.dumps(
        {
            "name": rollout.name,
            "version": rollout.version,
            "counter": rollout.counter,
            "plan": rollout.plan.model_dump(mode="json"),
            "phase": rollout.phase.value,
            "stage_index": rollout.stage_index,
            "stage_since": rollout.stage_since,
            "paused": rollout.paused,
            "reason": rollout.reason,
            "rollback": rollout.rollback,
        }
    )


def load_rollout(text: str) -> Rollout:
    raw = json.loads(text)
    return Rollout(
        name=raw["name"],
        version=raw["version"],
        counter=raw["counter"],
        plan=RolloutPlan.model_validate(raw["plan"]),
        phase=RolloutPhase(raw["phase"]),
        stage_index=raw["stage_index"],
        stage_since=raw["stage_since"],
        paused=raw["paused"],
        reason=raw["reason"],
        rollback=raw.get("rollback", False),
    )


# ------------------------------------------------------------------ SQL of both stores


def release_read(name: str, version: str) -> Read[ReleaseRecord | None]:
    return Read(
        RELEASE_SELECT + " WHERE name = ? AND version = ?", (name, version), first(release_row)
    )


def releases_read() -> Read[list[ReleaseRecord]]:
    return Read(
        RELEASE_SELECT + " ORDER BY name, counter", (), lambda rows: list(map(release_row, rows))
    )


def highest_counter_read(name: str) -> Read[int | None]:
    return Read(
        "SELECT MAX(counter) FROM model_releases WHERE name = ?",
        (name,),
        lambda rows: None if not rows or rows[0][0] is None else int(rows[0][0]),
    )


def rollout_read(name: str, version: str) -> Read[Rollout | None]:
    return Read(
        "SELECT state FROM model_rollouts WHERE name = ? AND version = ?",
        (name, version),
        first(lambda row: load_rollout(row[0])),
    )


def rollouts_read() -> Read[list[Rollout]]:
    return Read(
        "SELECT state FROM model_rollouts ORDER BY updated_at",
        (),
        lambda rows: [load_rollout(row[0]) for row in rows],
    )


def outcomes_read(name: str, version: str) -> Read[list[DeviceOutcome]]:
    return Read(
        OUTCOME_SELECT + " WHERE name = ? AND version = ?",
        (name, version),
        lambda rows: [outcome_row(row) for row in rows],
    )


def device_outcomes_read(device_id: str) -> Read[dict[tuple[str, str], DeviceOutcome]]:
    return Read(
        OUTCOME_SELECT + " WHERE device_id = ?",
        (device_id,),
        lambda rows: {(row[1], row[2]): outcome_row(row) for row in rows},
    )


def held_manifest(release: ReleaseRecord) -> Statement:
    """The manifest held under the release's name and version (no row: none)."""
    return (
        "SELECT manifest FROM model_releases WHERE name = ? AND version = ?",
        (release.name, release.version),
    )


def active_rollout(name: str) -> Statement:
    """The version of the model's rollout that has not ended (no row: none)."""
    return "SELECT version FROM model_rollouts WHERE name = ? AND terminal = 0", (name,)


def held_outcome(o: DeviceOutcome) -> Statement:
    """The device's stored outcome for the release, as compared with a new one."""
    return (
        "SELECT counter, result, check_name, reason FROM model_outcomes"
        " WHERE device_id = ? AND name = ? AND version = ?",
        (o.device_id, o.name, o.version),
    )
