"""The model tables on the PostgreSQL catalog (``store.py`` has the SQLite twin,
``store_rows.py`` the rows and SQL both share).

On the catalog's pool (migration 3 of ``catalog_schema_postgres.py`` made the
tables).  What SQLite's single writer gives for free is taken from the
database here: one active rollout per model is a partial unique index, and a
release or an outcome written by two instances at once is decided by its
primary key (``ON CONFLICT``) inside the transaction that audits it.
"""

from __future__ import annotations

from typing import Any, TypeVar

import asyncpg

from cloud_ingest.errors import Conflict
from cloud_ingest.models import store_rows
from cloud_ingest.models.rollout import Rollout, Transition
from cloud_ingest.models.store_rows import DeviceOutcome, ReleaseRecord
from cloud_ingest.postgres_database import PostgresDatabase, insert_audit, rows_changed
from cloud_ingest.sql_dialects import Read, render

__all__ = ["PostgresReleaseStore"]

T = TypeVar("T")


class PostgresReleaseStore(PostgresDatabase):
    """:class:`cloud_ingest.models.store.ReleaseStore` on a PostgreSQL pool."""

    async def _read(self, query: Read[T]) -> T:
        return query.shape(await self._all(render(query.sql, "postgres"), *query.params))

    async def add_release(self, release: ReleaseRecord, detail: dict[str, Any]) -> bool:
        async with self._transaction() as conn:
            status = await conn.execute(
                "INSERT INTO model_releases (name, version, counter, sha256, size, keyid,"
                " manifest, published_by, published_at) VALUES ($1, $2, $3, $4, $5, $6, $7,"
                " $8, $9) ON CONFLICT (name, version) DO NOTHING",
                *store_rows.release_values(release),
            )
            if rows_changed(status) == 0:
                sql, params = store_rows.held_manifest(release)
                held = await conn.fetchval(render(sql, "postgres"), *params)
                if bytes(held) == release.manifest:
                    return False
                raise Conflict(
                    f"{release.name} {release.version} is published with another manifest"
                )
            await insert_audit(
                conn, release.published_at, *store_rows.release_audit(release, detail)
            )
            return True

    async def get_release(self, name: str, version: str) -> ReleaseRecord | None:
        return await self._read(store_rows.release_read(name, version))

    async def list_releases(self) -> list[ReleaseRecord]:
        return await self._read(store_rows.releases_read())

    async def highest_counter(self, name: str) -> int | None:
        return await self._read(store_rows.highest_counter_read(name))

    async def save_rollout(
        self, rollout: Rollout, transition: Transition, now: float, *, new: bool = False
    ) -> None:
        async with self._transaction() as conn:
            if new:
                sql, params = store_rows.active_rollout(rollout.name)
                active = await conn.fetchval(render(sql, "postgres"), *params)
                if active is not None:
                    raise Conflict(f"{rollout.name} {active} is rolling out; abort it first")
                try:
                    await conn.execute(
                        "INSERT INTO model_rollouts (name, version, state, terminal, updated_at)"
                        " VALUES ($1, $2, $3, $4, $5)",
                        rollout.name,
                        rollout.version,
                        store_rows.dump_rollout(rollout),
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
                    store_rows.dump_rollout(rollout),
                    int(rollout.terminal),
                    now,
                )
            await insert_audit(conn, now, *store_rows.rollout_audit(rollout, transition))

    async def get_rollout(self, name: str, version: str) -> Rollout | None:
        return await self._read(store_rows.rollout_read(name, version))

    async def list_rollouts(self) -> list[Rollout]:
        return await self._read(store_rows.rollouts_read())

    async def record_outcomes(
        self, outcomes: list[DeviceOutcome], now: float
    ) -> list[DeviceOutcome]:
        changed: list[DeviceOutcome] = []
        async with self._transaction() as conn:
            for o in outcomes:
                sql, params = store_rows.held_outcome(o)
                row = await conn.fetchrow(render(sql + " FOR UPDATE", "postgres"), *params)
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
                await insert_audit(conn, now, *store_rows.outcome_audit(o))
                changed.append(o)
        return changed

    async def outcomes_of(self, name: str, version: str) -> list[DeviceOutcome]:
        return await self._read(store_rows.outcomes_read(name, version))

    async def device_outcomes(self, device_id: str) -> dict[tuple[str, str], DeviceOutcome]:
        return await self._read(store_rows.device_outcomes_read(device_id))
