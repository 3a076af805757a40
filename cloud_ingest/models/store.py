"""The model tables of the catalog (releases, rollouts, device outcomes).

:class:`ReleaseStore` is what the registry and the rollouts use;
:class:`SqliteReleaseStore` has its own aiosqlite connection to ``catalog.db``
(WAL: it shares the file with the main catalog, whose migrations created the
tables), ``store_postgres.py`` the same on the PostgreSQL catalog's pool.
Every change is written in one transaction with its audit event, as the main
catalog does.  :func:`open_release_store` picks the one the settings name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

from cloud_ingest.catalog import Catalog
from cloud_ingest.catalog_rows import Row
from cloud_ingest.errors import Conflict
from cloud_ingest.models.rollout import Rollout, RolloutPhase, Transition
from cloud_ingest.settings import IngestSettings
from cloud_ingest.sqlite_database import SqliteDatabase, insert_audit
from sync.protocol.releases import RolloutPlan

__all__ = [
    "OUTCOME_SELECT",
    "RELEASE_SELECT",
    "DeviceOutcome",
    "ReleaseRecord",
    "ReleaseStore",
    "SqliteReleaseStore",
    "dump_rollout",
    "load_rollout",
    "open_release_store",
    "outcome_audit",
    "release_audit",
    "release_row",
    "release_values",
    "rollout_audit",
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


class ReleaseStore(Protocol):
    """The model tables, on either catalog database."""

    async def close(self) -> None: ...

    async def add_release(self, release: ReleaseRecord, detail: dict[str, Any]) -> bool:
        """Store a release, audited ``model.publish``; False if this exact manifest is held
        already (a re-publish), Conflict if the name and version hold another one."""
        ...

    async def get_release(self, name: str, version: str) -> ReleaseRecord | None: ...

    async def list_releases(self) -> list[ReleaseRecord]: ...

    async def highest_counter(self, name: str) -> int | None: ...

    async def save_rollout(
        self, rollout: Rollout, transition: Transition, now: float, *, new: bool = False
    ) -> None:
        """Write a rollout's state with the audit event of its transition; with ``new``,
        Conflict when another rollout of the model is active or this one existed."""
        ...

    async def get_rollout(self, name: str, version: str) -> Rollout | None: ...

    async def list_rollouts(self) -> list[Rollout]: ...

    async def record_outcomes(
        self, outcomes: list[DeviceOutcome], now: float
    ) -> list[DeviceOutcome]:
        """Keep each device's latest outcome per release; audit those that changed
        (``model.outcome`` by the device).  Returns the changed ones."""
        ...

    async def outcomes_of(self, name: str, version: str) -> list[DeviceOutcome]: ...

    async def device_outcomes(self, device_id: str) -> dict[tuple[str, str], DeviceOutcome]: ...


async def open_release_store(settings: IngestSettings, catalog: Catalog) -> ReleaseStore:
    """The model tables beside ``catalog``: SQLite's file, or the PostgreSQL catalog's pool."""
    if settings.catalog is None:
        return await SqliteReleaseStore.open(settings.catalog_path)
    from cloud_ingest.catalog_postgres import PostgresCatalog
    from cloud_ingest.models.store_postgres import PostgresReleaseStore

    assert isinstance(catalog, PostgresCatalog)  # settings.catalog names PostgreSQL
    return PostgresReleaseStore(catalog.pool, owns_pool=False)


class SqliteReleaseStore(SqliteDatabase):
    @classmethod
    async def open(cls, path: Path) -> SqliteReleaseStore:
        db = await aiosqlite.connect(path, isolation_level=None)
        await db.execute("PRAGMA busy_timeout = 10000")
        await db.execute("PRAGMA synchronous = FULL")
        return cls(db)

    # ------------------------------------------------------------------ releases

    async def add_release(self, release: ReleaseRecord, detail: dict[str, Any]) -> bool:
        """Store a release, audited ``model.publish``; False if this exact manifest is held
        already (a re-publish), Conflict if the name and version hold another one."""
        async with self._transaction() as db:
            held = await self._all(
                "SELECT manifest FROM model_releases WHERE name = ? AND version = ?",
                (release.name, release.version),
            )
            if held:
                if bytes(held[0][0]) == release.manifest:
                    return False
                raise Conflict(
                    f"{release.name} {release.version} is published with another manifest"
                )
            await db.execute(
                "INSERT INTO model_releases (name, version, counter, sha256, size, keyid,"
                " manifest, published_by, published_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                release_values(release),
            )
            await insert_audit(db, release.published_at, *release_audit(release, detail))
            return True

    async def get_release(self, name: str, version: str) -> ReleaseRecord | None:
        rows = await self._all(RELEASE_SELECT + " WHERE name = ? AND version = ?", (name, version))
        return release_row(rows[0]) if rows else None

    async def list_releases(self) -> list[ReleaseRecord]:
        return [release_row(r) for r in await self._all(RELEASE_SELECT + " ORDER BY name, counter")]

    async def highest_counter(self, name: str) -> int | None:
        rows = await self._all("SELECT MAX(counter) FROM model_releases WHERE name = ?", (name,))
        return rows[0][0] if rows and rows[0][0] is not None else None

    # ------------------------------------------------------------------ rollouts

    async def save_rollout(
        self, rollout: Rollout, transition: Transition, now: float, *, new: bool = False
    ) -> None:
        """Write a rollout's state with the audit event of its transition."""
        async with self._transaction() as db:
            if new:
                active = await self._all(
                    "SELECT version FROM model_rollouts WHERE name = ? AND terminal = 0",
                    (rollout.name,),
                )
                if active:
                    raise Conflict(f"{rollout.name} {active[0][0]} is rolling out; abort it first")
                exists = await self._all(
                    "SELECT 1 FROM model_rollouts WHERE name = ? AND version = ?",
                    (rollout.name, rollout.version),
                )
                if exists:
                    raise Conflict(f"{rollout.name} {rollout.version} was rolled out already")
            await db.execute(
                "INSERT OR REPLACE INTO model_rollouts (name, version, state, terminal, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (rollout.name, rollout.version, dump_rollout(rollout), int(rollout.terminal), now),
            )
            await insert_audit(db, now, *rollout_audit(rollout, transition))

    async def get_rollout(self, name: str, version: str) -> Rollout | None:
        rows = await self._all(
            "SELECT state FROM model_rollouts WHERE name = ? AND version = ?", (name, version)
        )
        return load_rollout(rows[0][0]) if rows else None

    async def list_rollouts(self) -> list[Rollout]:
        rows = await self._all("SELECT state FROM model_rollouts ORDER BY updated_at")
        return [load_rollout(r[0]) for r in rows]

    # ------------------------------------------------------------------ outcomes

    async def record_outcomes(
        self, outcomes: list[DeviceOutcome], now: float
    ) -> list[DeviceOutcome]:
        """Keep each device's latest outcome per release; audit those that changed
        (``model.outcome`` by the device).  Returns the changed ones."""
        changed: list[DeviceOutcome] = []
        async with self._transaction() as db:
            for o in outcomes:
                rows = await self._all(
                    "SELECT counter, result, check_name, reason FROM model_outcomes"
                    " WHERE device_id = ? AND name = ? AND version = ?",
                    (o.device_id, o.name, o.version),
                )
                if rows and tuple(rows[0]) == (o.counter, o.result, o.check, o.reason):
                    continue
                await db.execute(
                    "INSERT OR REPLACE INTO model_outcomes (device_id, name, version, counter,"
                    " result, check_name, reason, reported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (o.device_id, o.name, o.version, o.counter, o.result, o.check, o.reason, now),
                )
                await insert_audit(db, now, *outcome_audit(o))
                changed.append(o)
        return changed

    async def outcomes_of(self, name: str, version: str) -> list[DeviceOutcome]:
        rows = await self._all(OUTCOME_SELECT + " WHERE name = ? AND version = ?", (name, version))
        return [DeviceOutcome(*r) for r in rows]

    async def device_outcomes(self, device_id: str) -> dict[tuple[str, str], DeviceOutcome]:
        rows = await self._all(OUTCOME_SELECT + " WHERE device_id = ?", (device_id,))
        return {(r[1], r[2]): DeviceOutcome(*r) for r in rows}


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
