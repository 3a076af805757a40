"""tus upload records and write locks in PostgreSQL, shared by every ingest instance.

In fleet mode (a PostgreSQL catalog and an object store) any instance may take
any request of an upload.  Its record (:class:`UploadInfo`) is a row of
``tus_uploads`` in the catalog's database, and the right to write the upload is
a lease on that row: one conditional UPDATE takes it only when no live lease is
held, so of two PATCHes for one upload on two instances at once exactly one
gets it and the other is answered 423 (retry).  Leases run on the database's
clock (instances' clocks may differ), are renewed while a body is written, and
run out by themselves when an instance dies mid-write.

Fencing: an instance can stall past its lease (a pause, a partition) while
another takes the upload over.  Each lease taken bumps ``lease_gen``, and a
part is committed (appended to ``part_keys``, ``data_offset`` moved on) only
by the conditional UPDATE that also checks the writer's token, generation and
start offset: a stalled writer's late part is refused (:class:`LeaseLost`,
409) and its object, stored under a key of its own generation, never
overwrites the new writer's.  The committed parts in the row are the upload's
bytes and offset (no object-store LIST per request).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Coroutine
from contextvars import ContextVar
from typing import Any, TypeVar

import asyncpg

from cloud_ingest.errors import CatalogUnavailable, CatalogUnreachable, Locked
from cloud_ingest.postgres_database import PG_ERRORS, reachable, rows_changed
from cloud_ingest.tus.core import UploadInfo
from cloud_ingest.tus.fencing import (
    Lease,
    LeaseLost,
    PartRow,
    holding,
    remember_row,
    update_row,
)

__all__ = ["PostgresUploadState"]

log = logging.getLogger(__name__)
_NOW = "extract(epoch from clock_timestamp())"  # the database's clock, seconds
DEFAULT_LEASE_S = 30.0
T = TypeVar("T")


# the row as the lease this request holds was taken (upload id, info, parts): the
# first load under the lease is answered from it instead of asking again
_CLAIMED: ContextVar[tuple[str, str, PartRow] | None] = ContextVar(
    "yardlink_tus_claimed", default=None
)


class PostgresUploadState:
    """Upload records and leases on a pool bound at startup (the catalog's)."""

    def __init__(self, *, lease_s: float = DEFAULT_LEASE_S) -> None:
        self.lease_s = lease_s
        self._pool: asyncpg.Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, pool: asyncpg.Pool) -> None:
        """Use ``pool``; called on the event loop that runs the service."""
        self._pool = pool
        self._loop = asyncio.get_running_loop()

    def call_from_thread(self, step: Coroutine[Any, Any, T]) -> T:
        """Run ``step`` on the service's loop and wait for it, from a worker thread
        (the blocking store code asks for the committed parts this way)."""
        loop = self._loop
        if loop is None:
            step.close()
            raise CatalogUnavailable("the shared upload state is not connected yet")
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # a worker thread: no loop of its own
            running = None
        if running is loop:
            step.close()
            raise RuntimeError("a blocking upload-state call on the event loop itself")
        return asyncio.run_coroutine_threadsafe(step, loop).result()

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
        """The upload's record; its committed parts, read in the same statement, are
        remembered for the rest of the request (``fencing.seen_row``)."""
        claimed = _CLAIMED.get()
        if claimed is not None and claimed[0] == upload_id:  # the lease just taken read it
            _CLAIMED.set(None)  # once: a later load asks again
            _, info, parts = claimed
            remember_row(upload_id, parts)
            return UploadInfo.from_json(json.loads(info))
        row = await self._fetchrow(
            "SELECT info, data_offset, part_keys, assembled FROM tus_uploads WHERE upload_id = $1",
            upload_id,
        )
        remember_row(upload_id, None if row is None else _part_row(row[1:]))
        return None if row is None else UploadInfo.from_json(json.loads(row[0]))

    async def save(self, info: UploadInfo) -> None:
        claimed = _CLAIMED.get()
        if claimed is not None and claimed[0] == info.upload_id:
            _CLAIMED.set(None)  # the row read with the lease is no longer the row
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
        update_row(upload_id, None)

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

    # ------------------------------------------------------------ parts
    async def parts(self, upload_id: str) -> PartRow | None:
        """The upload's committed parts, None when it has no record."""
        row = await self._fetchrow(
            "SELECT data_offset, part_keys, assembled FROM tus_uploads WHERE upload_id = $1",
            upload_id,
        )
        return None if row is None else _part_row(row)

    async def commit_part(
        self, upload_id: str, lease: Lease | None, start: int, size: int, key: str
    ) -> None:
        """Append part ``key`` (``size`` bytes at ``start``) if ``lease`` still holds the
        upload and the upload ends at ``start``; else :class:`LeaseLost`.

        One statement checks the fencing token and records the part (and moves the
        lease on).  Without a lease (a creation with a body: the upload is new) the
        part is taken while no live lease is held.
        """
        append = (
            "UPDATE tus_uploads SET part_keys = array_append(part_keys, $3),"
            " data_offset = data_offset + $4"
        )
        where = " WHERE upload_id = $1 AND data_offset = $2 AND NOT assembled"
        kept = " RETURNING data_offset, part_keys, assembled"
        if lease is None:
            row = await self._fetchrow(
                append + where + f" AND (lease_token IS NULL OR lease_until < {_NOW})" + kept,
                upload_id,
                start,
                key,
                size,
            )
        else:
            row = await self._fetchrow(
                append
                + f", lease_until = {_NOW} + $5"
                + where
                + " AND lease_token = $6 AND lease_gen = $7"
                + kept,
                upload_id,
                start,
                key,
                size,
                self.lease_s,
                lease.token,
                lease.generation,
            )
        if row is None:
            raise LeaseLost(
                f"upload {upload_id}: the part at {start} was not kept: this request's"
                " lease ran out and another request wrote the upload; HEAD and resume",
                headers={"Retry-After": "1"},
            )
        update_row(upload_id, _part_row(row))

    async def mark_assembled(self, upload_id: str) -> None:
        row = await self._fetchrow(
            "UPDATE tus_uploads SET assembled = TRUE, part_keys = '{}' WHERE upload_id = $1"
            " RETURNING data_offset, part_keys, assembled",
            upload_id,
        )
        update_row(upload_id, None if row is None else _part_row(row))

    # ------------------------------------------------------------ leases
    async def claim(self, upload_id: str, token: str) -> Lease | None:
        """Take the upload's lease for ``token`` if no live lease is held (None if not)."""
        row = await self._claim_row(upload_id, token)
        return None if row is None else Lease(token, int(row[0]))

    async def _claim_row(self, upload_id: str, token: str) -> asyncpg.Record | None:
        """Take the lease; the row as it is then: generation, info, committed parts."""
        return await self._fetchrow(
            f"UPDATE tus_uploads SET lease_token = $2, lease_until = {_NOW} + $3,"
            " lease_gen = lease_gen + 1"
            f" WHERE upload_id = $1 AND (lease_token IS NULL OR lease_until < {_NOW})"
            " RETURNING lease_gen, info, data_offset, part_keys, assembled",
            upload_id,
            token,
            self.lease_s,
        )

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
        row = await self._claim_row(upload_id, token)
        if row is None:
            raise Locked("another request is writing this upload", headers={"Retry-After": "1"})
        renewer = asyncio.create_task(self._renew_while_held(upload_id, token))
        claimed = _CLAIMED.set((upload_id, row[1], _part_row(row[2:])))
        try:
            with holding(Lease(token, int(row[0]))):
                yield
        finally:
            _CLAIMED.reset(claimed)
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


def _part_row(row: asyncpg.Record | tuple[Any, ...]) -> PartRow:
    """``(data_offset, part_keys, assembled)`` of a row as a :class:`PartRow`."""
    return PartRow(int(row[0]), tuple(row[1]), bool(row[2]))
