"""The model tables of the catalog (releases, rollouts, device outcomes).

:class:`ReleaseStore` is what the registry and the rollouts use;
:class:`SqliteReleaseStore` has its own aiosqlite connection to ``catalog.db``
(WAL: it shares the file with the main catalog, whose migrations created the
tables), ``store_postgres.py`` the same on the PostgreSQL catalog's pool; the
records, rows and SQL both share are in ``store_rows.py``.
Every change is written in one transaction with its audit event, as the main
catalog does.  :func:`open_release_store` picks the one the settings name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiosqlite

from cloud_ingest.catalog import Catalog
from cloud_ingest.errors import Conflict
from cloud_ingest.models.rollout import Rollout, Transition
from cloud_ingest.models.store_rows import (
    DeviceOutcome,
    ReleaseRecord,
    active_rollout,
    device_outcomes_read,
    dump_rollout,
    held_manifest,
    held_outcome,
    highest_counter_read,
    outcome_audit,
    outcomes_read,
    release_audit,
    release_read,
    release_values,
    releases_read,
    rollout_audit,
    rollout_read,
    rollouts_read,
)
from cloud_ingest.settings import IngestSettings
from cloud_ingest.sql_dialects import Read, render
from cloud_ingest.sqlite_database import SqliteDatabase, insert_audit

__all__ = [
    "DeviceOutcome",
    "ReleaseRecord",
    "ReleaseStore",
    "SqliteReleaseStore",
    "open_release_store",
]

T = TypeVar("T")


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

    async def _read(self, query: Read[T]) -> T:
        return query.shape(await self._all(render(query.sql, "sqlite"), query.params))

    # ------------------------------------------------------------------ releases

    async def add_release(self, release: ReleaseRecord, detail: dict[str, Any]) -> bool:
        """Store a release, audited ``model.publish``; False if this exact manifest is held
        already (a re-publish), Conflict if the name and version hold another one."""
        async with self._transaction() as db:
            held = await self._all(*held_manifest(release))
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
        return await self._read(release_read(name, version))

    async def list_releases(self) -> list[ReleaseRecord]:
        return await self._read(releases_read())

    async def highest_counter(self, name: str) -> int | None:
        return await self._read(highest_counter_read(name))

    # ------------------------------------------------------------------ rollouts

    async def save_rollout(
        self, rollout: Rollout, transition: Transition, now: float, *, new: bool = False
    ) -> None:
        """Write a rollout's state with the audit event of its transition."""
        async with self._transaction() as db:
            if new:
                active = await self._all(*active_rollout(rollout.name))
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
        return await self._read(rollout_read(name, version))

    async def list_rollouts(self) -> list[Rollout]:
        return await self._read(rollouts_read())

    # ------------------------------------------------------------------ outcomes

    async def record_outcomes(
        self, outcomes: list[DeviceOutcome], now: float
    ) -> list[DeviceOutcome]:
        """Keep each device's latest outcome per release; audit those that changed
        (``model.outcome`` by the device).  Returns the changed ones."""
        changed: list[DeviceOutcome] = []
        async with self._transaction() as db:
            for o in outcomes:
                rows = await self._all(*held_outcome(o))
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
        return await self._read(outcomes_read(name, version))

    async def device_outcomes(self, device_id: str) -> dict[tuple[str, str], DeviceOutcome]:
        return await self._read(device_outcomes_read(device_id))
