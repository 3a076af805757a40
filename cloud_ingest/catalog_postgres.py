"""The shared catalog: PostgreSQL through asyncpg, for many ingest instances.

The same :class:`cloud_ingest.catalog.Catalog` as ``catalog_sqlite.py``, with
the same answers (``tests/cloud_ingest/test_catalog.py`` runs on both).  What
must happen once whichever instance serves the request (a batch, an upload's
completion, a raw request's delivery, a device id) is decided by primary keys
with ``ON CONFLICT`` and by conditional updates inside one transaction.
"""

from __future__ import annotations

from typing import Any, TypeVar

import asyncpg

from cloud_ingest import catalog_queries, catalog_rows
from cloud_ingest.catalog import (
    AuditEvent,
    BatchRecord,
    DeviceRecord,
    RawRequestRecord,
    RawRequestState,
    UploadRecord,
)
from cloud_ingest.catalog_queries import PrincipalRole
from cloud_ingest.errors import Conflict, NotFound
from cloud_ingest.postgres_database import (
    PgConnection,
    PostgresDatabase,
    connect_pool,
    insert_audit,
    rows_changed,
)
from cloud_ingest.principal import Principal
from cloud_ingest.sql_dialects import Read, Statement, render
from sync.protocol import Stream

__all__ = ["PostgresCatalog"]

T = TypeVar("T")


async def _changed(conn: PgConnection, statement: Statement) -> int:
    """Run one shared statement in the caller's transaction; how many rows it changed."""
    sql, params = statement
    return rows_changed(await conn.execute(render(sql, "postgres"), *params))


async def _insert_new(
    conn: PgConnection, table: str, columns: str, values: tuple[Any, ...]
) -> bool:
    """Insert the row unless one with its key (the first column) is held, by this
    instance or another (the insert waits for its commit); True if inserted."""
    key = columns.split(",", 1)[0]
    status = await conn.execute(
        f"INSERT INTO {table} ({columns}) VALUES ({_marks(len(values))})"
        f" ON CONFLICT ({key}) DO NOTHING",
        *values,
    )
    return rows_changed(status) == 1


async def _lock_principal(conn: PgConnection, role: PrincipalRole, subject: str) -> asyncpg.Record:
    """The principal's row (``revoked_at``), locked to the commit; NotFound if none."""
    sql, params = catalog_queries.revoked_at(role, subject)
    row = await conn.fetchrow(render(sql + " FOR UPDATE", "postgres"), *params)
    if row is None:
        raise NotFound(f"no {role} {subject!r}")
    return row


class PostgresCatalog(PostgresDatabase):
    """:class:`cloud_ingest.catalog.Catalog` on a PostgreSQL database."""

    @classmethod
    async def open(
        cls, url: str, *, pool_size: int = 10, shown: str | None = None
    ) -> PostgresCatalog:
        return cls(await connect_pool(url, size=pool_size, shown=shown or url))

    async def _read(self, query: Read[T]) -> T:
        """Run one of the shared reads (``catalog_queries.py``) in this dialect."""
        return query.shape(await self._all(render(query.sql, "postgres"), *query.params))

    # ------------------------------------------------------------- devices, credentials

    async def _add_credential(
        self, conn: PgConnection, token_hash: str, role: str, subject: str, now: float
    ) -> None:
        columns = "token_hash, role, subject, created_at"
        if not await _insert_new(conn, "credentials", columns, (token_hash, role, subject, now)):
            raise Conflict("this token is in use already")

    async def add_device(
        self, device_id: str, site_id: str, token_hash: str, now: float, *, actor: str
    ) -> None:
        async with self._transaction() as conn:
            columns = "device_id, site_id, created_at"
            if not await _insert_new(conn, "devices", columns, (device_id, site_id, now)):
                raise Conflict(f"device {device_id!r} already exists")
            await self._add_credential(conn, token_hash, "device", device_id, now)
            await insert_audit(conn, now, actor, "device.add", device_id, {"site_id": site_id})

    async def revoke_device(self, device_id: str, now: float, *, actor: str) -> None:
        await self._revoke("device", device_id, now, actor=actor)

    async def add_operator(self, name: str, token_hash: str, now: float, *, actor: str) -> None:
        async with self._transaction() as conn:
            if not await _insert_new(conn, "operators", "name, created_at", (name, now)):
                raise Conflict(f"operator {name!r} already exists")
            await self._add_credential(conn, token_hash, "operator", name, now)
            await insert_audit(conn, now, actor, "operator.add", name, {})

    async def revoke_operator(self, name: str, now: float, *, actor: str) -> None:
        await self._revoke("operator", name, now, actor=actor)

    async def _revoke(self, role: PrincipalRole, subject: str, now: float, *, actor: str) -> None:
        async with self._transaction() as conn:
            row = await _lock_principal(conn, role, subject)
            detail = {} if row[0] is None else {"already_revoked": True}
            for sql, params in catalog_queries.revoke(role, subject, now):
                await conn.execute(render(sql, "postgres"), *params)
            await insert_audit(conn, now, actor, f"{role}.revoke", subject, detail)

    async def rotate_device_token(
        self, device_id: str, token_hash: str, now: float, *, actor: str
    ) -> None:
        async with self._transaction() as conn:
            row = await _lock_principal(conn, "device", device_id)
            if row[0] is not None:
                raise Conflict(f"device {device_id!r} is revoked; register it again instead")
            await conn.execute(
                "UPDATE credentials SET revoked_at = $1"
                " WHERE role = 'device' AND subject = $2 AND revoked_at IS NULL",
                now,
                device_id,
            )
            await self._add_credential(conn, token_hash, "device", device_id, now)
            await insert_audit(conn, now, actor, "device.rotate", device_id, {})

    async def record_audit(
        self, now: float, actor: str, action: str, subject: str, detail: dict[str, Any]
    ) -> None:
        async with self._transaction() as conn:
            await insert_audit(conn, now, actor, action, subject, detail)

    async def principal_for_token(self, token_hash: str) -> Principal | None:
        return await self._read(catalog_queries.principal_for_token(token_hash))

    async def get_device(self, device_id: str) -> DeviceRecord | None:
        return await self._read(catalog_queries.device(device_id))

    async def list_devices(self) -> list[DeviceRecord]:
        return await self._read(catalog_queries.devices())

    async def record_sync(self, device_id: str, status: dict[str, Any], now: float) -> None:
        sql, params = catalog_queries.record_sync(device_id, status, now)
        await self._execute(render(sql, "postgres"), *params)

    # ------------------------------------------------------------- batches, watermarks

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        return await self._read(catalog_queries.batch(batch_id))

    async def record_batch(self, batch: BatchRecord) -> BatchRecord:
        """Store the batch and move its watermark in one statement (one round trip,
        atomic); the batch held already when another instance stored it first."""
        stored = await self._value(
            "WITH stored AS ("
            f" INSERT INTO batches ({catalog_rows.BATCH_COLUMNS}) VALUES ({_marks(11)})"
            " ON CONFLICT (batch_id) DO NOTHING RETURNING device_id, stream, last_seq"
            "), marked AS ("
            " INSERT INTO watermarks (device_id, stream, acked_seq)"
            " SELECT device_id, stream, last_seq FROM stored"
            " ON CONFLICT (device_id, stream)"
            " DO UPDATE SET acked_seq = GREATEST(watermarks.acked_seq, excluded.acked_seq)"
            ") SELECT count(*) FROM stored",
            *catalog_rows.batch_values(batch),
        )
        if stored:
            return batch
        held = await self._read(catalog_queries.batch(batch.batch_id))
        assert held is not None  # ON CONFLICT waited for the other's commit
        return held

    async def overlapping_batch(
        self, device_id: str, stream: Stream, first_seq: int, last_seq: int
    ) -> str | None:
        return await self._read(
            catalog_queries.overlapping_batch(device_id, stream, first_seq, last_seq)
        )

    async def held_ranges(
        self, device_id: str, stream: Stream, above: int, limit: int
    ) -> list[tuple[int, int]]:
        return await self._read(catalog_queries.held_ranges(device_id, stream, above, limit))

    async def watermarks(self, device_id: str) -> dict[Stream, int]:
        return await self._read(catalog_queries.watermarks(device_id))

    # ------------------------------------------------------------- raw requests

    async def add_raw_request(self, request: RawRequestRecord) -> None:
        async with self._transaction() as conn:
            if not await _insert_new(
                conn,
                "raw_requests",
                catalog_rows.RAW_INSERT_COLUMNS,
                catalog_rows.raw_request_values(request),
            ):
                raise Conflict(f"raw request {request.request_id!r} already exists")
            await insert_audit(
                conn,
                request.created_at,
                request.created_by,
                "raw_request.create",
                request.request_id,
                catalog_rows.raw_request_audit(request),
            )

    async def get_raw_request(self, request_id: str) -> RawRequestRecord | None:
        return await self._read(catalog_queries.raw_request(request_id))

    async def list_raw_requests(
        self, *, device_id: str | None, state: RawRequestState | None, limit: int
    ) -> list[RawRequestRecord]:
        return await self._read(
            catalog_queries.list_raw_requests(device_id=device_id, state=state, limit=limit)
        )

    async def pending_raw_requests(self, device_id: str, now: float) -> list[RawRequestRecord]:
        return await self._read(catalog_queries.pending_raw_requests(device_id, now))

    async def set_raw_request_state(
        self,
        device_id: str,
        request_ids: list[str],
        state: RawRequestState,
        now: float,
        upload_id: str | None = None,
    ) -> int:
        if not request_ids:
            return 0
        moved = 0
        async with self._transaction() as conn:
            for request_id in request_ids:
                moved += await _changed(
                    conn,
                    catalog_queries.move_raw_request(device_id, request_id, state, now, upload_id),
                )
        return moved

    async def expire_raw_requests(self, now: float) -> int:
        sql, params = catalog_queries.expire_raw_requests(now)
        return rows_changed(await self._execute(render(sql, "postgres"), *params))

    # ------------------------------------------------------------- uploads, blobs

    async def record_upload(self, upload: UploadRecord, *, actor: str) -> bool:
        async with self._transaction() as conn:
            if not await _insert_new(
                conn, "uploads", catalog_rows.UPLOAD_COLUMNS, catalog_rows.upload_values(upload)
            ):
                return False  # recorded already, by this instance or another
            if upload.sha256 is not None:
                await _insert_new(
                    conn, "blobs", catalog_rows.BLOB_COLUMNS, catalog_rows.blob_values(upload)
                )
            delivery = catalog_queries.deliver_raw_request(upload)
            delivered = 0 if delivery is None else await _changed(conn, delivery)
            subject, detail = catalog_rows.upload_audit(upload, delivered=bool(delivered))
            await insert_audit(conn, upload.completed_at, actor, "upload.complete", subject, detail)
        return True

    async def has_blob(self, sha256: str) -> bool:
        return await self._read(catalog_queries.has_blob(sha256))

    async def device_uploaded_blob(self, device_id: str, sha256: str) -> bool:
        return await self._read(catalog_queries.device_uploaded_blob(device_id, sha256))

    # ------------------------------------------------------------- audit

    async def list_audit(self, *, after_id: int, limit: int) -> list[AuditEvent]:
        return await self._read(catalog_queries.list_audit(after_id=after_id, limit=limit))


def _marks(count: int) -> str:
    """``count`` PostgreSQL placeholders (``$1, $2, ...``) for a VALUES list."""
    return ", ".join(f"${n}" for n in range(1, count + 1))
