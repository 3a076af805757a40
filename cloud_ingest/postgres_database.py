"""What the service's PostgreSQL stores share: one asyncpg pool per instance,
migrations under an advisory lock, whole transactions, and the audit insert.

The catalog (``catalog_postgres.py``) and the tus upload state
(``tus/state_postgres.py``) use one pool.  Transactions
run at READ COMMITTED; what must happen once across instances rests on primary
keys and ``ON CONFLICT``, row locks (``FOR UPDATE``) and conditional updates,
never on a lock inside one process.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from cloud_ingest.catalog_schema_postgres import (
    MIGRATION_LOCK,
    MIGRATIONS,
    SCHEMA_VERSION,
    VERSION_TABLE,
)
from cloud_ingest.errors import CatalogUnavailable, CatalogUnreachable, CatalogVersionError

__all__ = [
    "AUDIT_LOCK",
    "PG_ERRORS",
    "PgConnection",
    "PostgresDatabase",
    "connect_pool",
    "insert_audit",
    "reachable",
    "rows_changed",
]

# a connection of the pool, as the caller's transaction hands it on
PgConnection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"

AUDIT_LOCK = MIGRATION_LOCK + 1  # audit ids are handed out in commit order under it
CONNECT_TIMEOUT_S = 10.0
PG_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
# the database is not there (down, restarting, cut off), as opposed to a refused statement
UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InterfaceError,
)


@contextmanager
def reachable() -> Iterator[None]:
    """Turn a lost database into :class:`CatalogUnreachable` (503, retry), not a 500."""
    try:
        yield
    except asyncpg.DataError:  # an InterfaceError too, but about the values sent
        raise
    except UNREACHABLE as exc:
        raise CatalogUnreachable(
            f"the catalog database cannot be reached: {type(exc).__name__}: {exc}",
            headers={"Retry-After": "5"},
        ) from exc


async def connect_pool(url: str, *, size: int, shown: str) -> asyncpg.Pool:
    """A pool on ``url``, the schema migrated; CatalogUnavailable names ``shown`` (no password)."""
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=1,
            max_size=size,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=60,
            reset=_keep_session,
        )
    except PG_ERRORS as exc:
        raise CatalogUnavailable(f"cannot open catalog {shown}: {exc}") from exc
    try:
        await migrate(pool)
    except PG_ERRORS as exc:
        await pool.close()
        raise CatalogUnavailable(f"cannot open catalog {shown}: {exc}") from exc
    except BaseException:
        await pool.close()
        raise
    return pool


async def _keep_session(_: asyncpg.Connection) -> None:
    """Return a connection to the pool without asyncpg's session reset query.

    By default every release sends ``pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL``: one more round trip per pooled statement.  Nothing
    here leaves session state behind (advisory locks are transaction-scoped, no
    SET, LISTEN or cursor outlives its transaction), and asyncpg still rolls
    back a transaction left open before this runs.
    """


async def migrate(pool: asyncpg.Pool) -> None:
    """Apply every migration above the stored version, each in a transaction under the lock."""
    async with pool.acquire() as conn:
        for version, script in MIGRATIONS:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                await conn.execute(VERSION_TABLE)
                current = await conn.fetchval("SELECT version FROM yardlink_schema") or 0
                if current > SCHEMA_VERSION:
                    raise CatalogVersionError(
                        f"catalog schema v{current} is newer than this yardlink (v{SCHEMA_VERSION})"
                    )
                if version <= current:
                    continue
                await conn.execute(script)
                await conn.execute(
                    "INSERT INTO yardlink_schema (version) VALUES ($1)"
                    " ON CONFLICT (singleton) DO UPDATE SET version = excluded.version",
                    version,
                )


async def schema_version(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT version FROM yardlink_schema") or 0)


class PostgresDatabase:
    """A pool; ``_transaction`` keeps a multi-statement change whole."""

    def __init__(self, pool: asyncpg.Pool, *, owns_pool: bool = True) -> None:
        self._pool = pool
        self._owns_pool = owns_pool

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def close(self) -> None:
        if self._owns_pool:
            await self._pool.close()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[PgConnection]:
        with reachable():
            async with self._pool.acquire() as conn, conn.transaction():
                yield conn

    async def _one(self, sql: str, *params: Any) -> asyncpg.Record | None:
        with reachable():
            return await self._pool.fetchrow(sql, *params)

    async def _all(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        with reachable():
            return list(await self._pool.fetch(sql, *params))

    async def _execute(self, sql: str, *params: Any) -> str:
        with reachable():
            return await self._pool.execute(sql, *params)

    async def _value(self, sql: str, *params: Any) -> Any:
        with reachable():
            return await self._pool.fetchval(sql, *params)


async def insert_audit(
    conn: PgConnection,
    at: float,
    actor: str,
    action: str,
    subject: str,
    detail: dict[str, Any],
) -> None:
    """Append one audit event inside the caller's transaction.

    The advisory lock (held to the commit) makes ids commit in order, so a
    reader paging with ``after_id`` never skips an event that commits later
    under a lower id.
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK)
    await conn.execute(
        "INSERT INTO audit_log (at, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)",
        at,
        actor,
        action,
        subject,
        json.dumps(detail, default=str),
    )


def rows_changed(status: str) -> int:
    """The row count of a command status such as ``UPDATE 3`` or ``INSERT 0 1``."""
    return int(status.rsplit(" ", 1)[-1])
