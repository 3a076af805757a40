"""The model tables on the PostgreSQL catalog (``store.py`` has the SQLite twin).

On the catalog's pool (migration 3 of ``catalog_schema_postgres.py`` made the
tables).  What SQLite's single writer gives for free is taken from the
database here: one active rollout per model is a partial unique index, and a
release or an outcome written by two instances at once is decided by its
primary key (``ON CONFLICT``) inside the transaction that audits it.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from cloud_ingest.errors import Conflict
from cloud_ingest.models.rollout import Rollout, Transition
from cloud_ingest.models.store import (
    OUTCOME_SELECT,
    RELEASE_SELECT,
    DeviceOutcome,
    ReleaseRecord,
    dump_rollout,
    load_rollout,
    outcome_audit,
    release_audit,
    release_row,
    release_values,
    rollout_audit,
)
from cloud_ingest.postgres_database import PostgresDatabase, insert_audit, rows_changed

__all__ = ["PostgresReleaseStore"]


class PostgresReleaseStore(PostgresDatabase):
    """:class:`cloud_ingest.models.store.ReleaseStore` on a PostgreSQL pool."""

    async def add_release(self, release: ReleaseRecord, detail: dict[str, Any]) -> bool:
        async with self._transaction() as conn:
            status = await conn.execute(
                "INSERT INTO model_releases (name, version, counter, sha256, size, keyid,"
                " manifest, published_by, published_at) VALUES ($1, $2, $3, $4, $5, $6, $7,"
                " $8, $9) ON CONFLICT (name, version) DO NOTHING",
                *release_values(release),
            )
            if rows_changed(status) == 0:
                held = await conn.fetchval(
                    "SELECT manifest FROM model_releases WHERE name = $1 AND version = $2",
                    release.name,
                    release.version,
                )
                if bytes(held) == release.manifest:
                    return False
                raise Conflict(
                    f"{release.name} {release.version} is published with another manifest"
                )
            await insert_audit(conn, release.published_at, *release_audit(release, detail))
            return True

    async def get_release(self, name: str, version: str) -> ReleaseRecord | None:
        row = await self._one(RELEASE_SELECT + " WHERE name = $1 AND version = $2", name, version)
        return release_row(row) if row else None

    async def list_releases(self) -> list[ReleaseRecord]:
        return [release_row(r) for r in await self._all(RELEASE_SELECT + " ORDER BY name, counter")]

    async def highest_counter(self, name: str) -> int | None:
        value = await self._value("SELECT MAX(counter) FROM model_releases WHERE name = $1", name)
        return None if value is None else int(value)

    async def save_rollout(
        self, rollout: Rollout, transition: Transition, now: float, *, new: bool = False
    ) -> None:
        async with self._transaction() as conn:
            if new:
                active = await conn.fetchval(
                    "SELECT version FROM model_rollouts WHERE name = $1 AND terminal = 0",
                    rollout.name,
                )
                if active is not None:
                    raise Conflict(f"{rollout.name} {active} is rolling out; abort it first")
                try:
                    await conn.execute(
                        "INSERT INTO model_rollouts (name, version, state, terminal, updated_at)"
                        " VALUES ($1, $2, $3, $4, $5)",
                        rollout.name,
                        rollout.version,
                        dump_rollout(rollout),
                        int(rollout.terminal),
                        now,
                    )
                except asyncpg.UniqueViolationError as exc:  # it existed, or another started
                    raise Conflict(
                        f"{rollout.name} {rollout.version} was rolled out already,"
                        " or another rollout of it started"
                    ) from exc
            else:
                await conn.execute(
                    "INSERT INTO model_rollouts (name, version, state, terminal, updated_at)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name, version) DO UPDATE SET"
                    " state = excluded.state, terminal = excluded.terminal,"
                    " updated_at = excluded.updated_at",
                    rollout.name,
                    rollout.version,
                    dump_rollout(rollout),
                    int(rollout.terminal),
                    now,
                )
            await insert_audit(conn, now, *rollout_audit(rollout, transition))

    async def get_rollout(self, name: str, version: str) -> Rollout | None:
        row = await self._one(
            "SELECT state FROM model_rollouts WHERE name = $1 AND version = $2", name, version
        )
        return load_rollout(row[0]) if row else None

    async def list_rollouts(self) -> list[Rollout]:
        rows = await self._all("SELECT state FROM model_rollouts ORDER BY updated_at")
        return [load_rollout(r[0]) for r in rows]

    async def record_outcomes(
        self, outcomes: list[DeviceOutcome], now: float
    ) -> list[DeviceOutcome]:
        changed: list[DeviceOutcome] = []
        async with self._transaction() as conn:
            for o in outcomes:
                row = await conn.fetchrow(
                    "SELECT counter, result, check_name, reason FROM model_outcomes"
                    " WHERE device_id = $1 AND name = $2 AND version = $3 FOR UPDATE",
                    o.device_id,
                    o.name,
                    o.version,
                )
                if row is not None and tuple(row) == (o.counter, o.result, o.check, o.reason):
                    continue
                await conn.execute(
                    "INSERT INTO model_outcomes (device_id, name, version, counter, result,"
                    " check_name, reason, reported_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    " ON CONFLICT (device_id, name, version) DO UPDATE SET"
                    " counter = excluded.counter, result = excluded.result,"
                    " check_name = excluded.check_name, reason = excluded.reason,"
                    " reported_at = excluded.reported_at",
                    o.device_id,
                    o.name,
                    o.version,
                    o.counter,
                    o.result,
                    o.check,
                    o.reason,
                    now,
                )
                await insert_audit(conn, now, *outcome_audit(o))
                changed.append(o)
        return changed

    async def outcomes_of(self, name: str, version: str) -> list[DeviceOutcome]:
        rows = await self._all(OUTCOME_SELECT + " WHERE name = $1 AND version = $2", name, version)
        return [DeviceOutcome(*r) for r in rows]

    async def device_outcomes(self, device_id: str) -> dict[tuple[str, str], DeviceOutcome]:
        rows = await self._all(OUTCOME_SELECT + " WHERE device_id = $1", device_id)
        return {(r[1], r[2]): DeviceOutcome(*r) for r in rows}
