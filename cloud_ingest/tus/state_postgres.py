"""tus upload records and write locks in PostgreSQL, shared by every ingest instance.

In fleet mode (a PostgreSQL catalog and an object store) any instance may take
any request of an upload.  Its record (:class:`UploadInfo`) is a row of
``tus_uploads`` in the catalog's database, and the right to write the upload is
a lease on that row: one conditional UPDATE takes it only when no live lease is
held, so of two PATCHes for one upload on two instances at once exactly one
gets it and the other is answered 423 (retry).  Leases run on the database's
clock (instances' clocks may differ), are renewed while a body is written, and
run out by themselves when an instance dies mid-write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from cloud_ingest.errors import CatalogUnavailable, CatalogUnreachable, Locked
from cloud_ingest.postgres_database import PG_ERRORS, reachable, rows_changed
from cloud_ingest.tus.core import UploadInfo

__all__ = ["PostgresUploadState"]

log = logging.getLogger(__name__)
_NOW = "extract(epoch from clock_timestamp())"  # the database's clock, seconds
DEFAULT_LEASE_S = 30.0


class PostgresUploadState:
    """Upload records and leases on a pool bound at startup (the catalog's)."""

    def __init__(self, *, lease_s: float = DEFAULT_LEASE_S) -> None:
        self.lease_s = lease_s
        self._pool: asyncpg.Pool | None = None

    def bind(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise CatalogUnavailable("the shared upload state is not connected yet")
        return self._pool

    async def _execute(self, sql: str, *params: Any) -> str:
        with reachable():
            return await self.pool.execute(sql, *params)

    async def _fetchrow(self, sql: str, *params: Any) -> asyncpg.Record | None:
        with reachable():
            return await self.pool.fetchrow(sql, *params)

    async def _fetch(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        with reachable():
            return list(await self.pool.fetch(sql, *params))

    # ------------------------------------------------------------ records
    async def get(self, upload_id: str) -> UploadInfo | None:
        row = await self._fetchrow("SELECT info FROM tus_uploads WHERE upload_id = $1", upload_id)
        return None if row is None else UploadInfo.from_json(json.loads(row[0]))

    async def save(self, info: UploadInfo) -> None:
        await self._execute(
            "INSERT INTO tus_uploads (upload_id, info, expires_at, completed)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (upload_id) DO UPDATE SET"
            " info = excluded.info, expires_at = excluded.expires_at,"
            " completed = excluded.completed",
            info.upload_id,
            json.dumps(info.to_json()),
            info.expires_at,
            info.completed,
        )

    async def delete(self, upload_id: str) -> None:
        await self._execute("DELETE FROM tus_uploads WHERE upload_id = $1", upload_id)

    async def expired(self, now: float, keep_completed_s: float, limit: int) -> list[str]:
        """Uploads due for removal and not being written: unfinished past their expiry,
        finished ``keep_completed_s`` after it (a late HEAD still answers)."""
        rows = await self._fetch(
            "SELECT upload_id FROM tus_uploads"
            " WHERE (CASE WHEN completed THEN expires_at + $2 ELSE expires_at END) <= $1"
            f" AND (lease_token IS NULL OR lease_until < {_NOW})"
            " ORDER BY expires_at LIMIT $3",
            now,
            keep_completed_s,
            limit,
        )
        return [str(r[0]) for r in rows]

    # ------------------------------------------------------------ leases
    async def claim(self, upload_id: str, token: str) -> bool:
        """Take the upload's lease for ``token`` if no live lease is held; whether it was."""
        status = await self._execute(
            f"UPDATE tus_uploads SET lease_token = $2, lease_until = {_NOW} + $3"
            f" WHERE upload_id = $1 AND (lease_token IS NULL OR lease_until < {_NOW})",
            upload_id,
            token,
            self.lease_s,
        )
        return rows_changed(status) == 1

    async def renew(self, upload_id: str, token: str) -> bool:
        """Move a held lease on; False when it was lost (ran out and taken)."""
        status = await self._execute(
            f"UPDATE tus_uploads SET lease_until = {_NOW} + $3"
            " WHERE upload_id = $1 AND lease_token = $2",
            upload_id,
            token,
            self.lease_s,
        )
        return rows_changed(status) == 1

    async def release(self, upload_id: str, token: str) -> None:
        await self._execute(
            "UPDATE tus_uploads SET lease_token = NULL, lease_until = NULL"
            " WHERE upload_id = $1 AND lease_token = $2",
            upload_id,
            token,
        )

    async def is_leased(self, upload_id: str) -> bool:
        row = await self._fetchrow(
            f"SELECT lease_token IS NOT NULL AND lease_until >= {_NOW}"
            " FROM tus_uploads WHERE upload_id = $1",
            upload_id,
        )
        return bool(row and row[0])

    @contextlib.asynccontextmanager
    async def lease(self, upload_id: str) -> AsyncIterator[None]:
        """Hold the upload's lease for the block; :class:`Locked` when another holds it."""
        token = secrets.token_hex(16)
        if not await self.claim(upload_id, token):
            raise Locked("another request is writing this upload", headers={"Retry-After": "1"})
        renewer = asyncio.create_task(self._renew_while_held(upload_id, token))
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            try:
                await self.release(upload_id, token)
            except (CatalogUnreachable, *PG_ERRORS) as exc:  # the lease runs out by itself
                log.warning("upload %s: lease not released: %s", upload_id, exc)

    async def _renew_while_held(self, upload_id: str, token: str) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                held = await self.renew(upload_id, token)
            except (CatalogUnreachable, *PG_ERRORS) as exc:
                log.warning("upload %s: lease not renewed: %s", upload_id, exc)
                continue
            if not held:
                log.error("upload %s: lease lost while writing", upload_id)
                return
