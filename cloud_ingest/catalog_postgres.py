"""The shared catalog: PostgreSQL through asyncpg, for many ingest instances.

The same :class:`cloud_ingest.catalog.Catalog` as ``catalog_sqlite.py``, with
the same answers (``tests/cloud_ingest/test_catalog.py`` runs on both).  What
must happen once whichever instance serves the request (a batch, an upload's
completion, a raw request's delivery, a device id) is decided by primary keys
with ``ON CONFLICT`` and by conditional updates inside one transaction.
"""

from __future__ import annotations

import json
from typing import Any

from cloud_ingest import catalog_rows
from cloud_ingest.catalog import (
    AuditEvent,
    BatchRecord,
    DeviceRecord,
    RawRequestRecord,
    RawRequestState,
    UploadRecord,
)
from cloud_ingest.catalog_rows import (
    BATCH_SELECT,
    DEVICE_SELECT,
    RAW_SELECT,
    batch_row,
    device_row,
    raw_row,
)
from cloud_ingest.errors import Conflict, NotFound
from cloud_ingest.postgres_database import (
    PgConnection,
    PostgresDatabase,
    connect_pool,
    insert_audit,
    rows_changed,
)
from cloud_ingest.principal import Principal
from sync.protocol import Stream

__all__ = ["PostgresCatalog"]


async def _move_raw_request(
    conn: PgConnection,
    device_id: str,
    request_id: str,
    state: RawRequestState,
    now: float,
    upload_id: str | None,
) -> int:
    """Move one of the device's *requested* raw requests to ``state``; 1 if it moved."""
    status = await conn.execute(
        "UPDATE raw_requests SET state = $1, state_changed_at = $2,"
        " upload_id = COALESCE($3, upload_id)"
        " WHERE request_id = $4 AND device_id = $5 AND state = 'requested'",
        state,
        now,
        upload_id,
        request_id,
        device_id,
    )
    return rows_changed(status)


class PostgresCatalog(PostgresDatabase):
    """:class:`cloud_ingest.catalog.Catalog` on a PostgreSQL database."""

    @classmethod
    async def open(
        cls, url: str, *, pool_size: int = 10, shown: str | None = None
    ) -> PostgresCatalog:
        return cls(await connect_pool(url, size=pool_size, shown=shown or url))

    # ------------------------------------------------------------- devices, credentials

    async def _add_credential(
        self, conn: PgConnection, token_hash: str, role: str, subject: str, now: float
    ) -> None:
        status = await conn.execute(
            "INSERT INTO credentials (token_hash, role, subject, created_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (token_hash) DO NOTHING",
            token_hash,
            role,
            subject,
            now,
        )
        if rows_changed(status) == 0:
            raise Conflict("this token is in use already")

    async def add_device(
        self, device_id: str, site_id: str, token_hash: str, now: float, *, actor: str
    ) -> None:
        async with self._transaction() as conn:
            status = await conn.execute(
                "INSERT INTO devices (device_id, site_id, created_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (device_id) DO NOTHING",
                device_id,
                site_id,
                now,
            )
            if rows_changed(status) == 0:
                raise Conflict(f"device {device_id!r} already exists")
            await self._add_credential(conn, token_hash, "device", device_id, now)
            await insert_audit(conn, now, actor, "device.add", device_id, {"site_id": site_id})

    async def revoke_device(self, device_id: str, now: float, *, actor: str) -> None:
        async with self._transaction() as conn:
            row = await conn.fetchrow(
                "SELECT revoked_at FROM devices WHERE device_id = $1 FOR UPDATE", device_id
            )
            if row is None:
                raise NotFound(f"no device {device_id!r}")
            detail = {} if row[0] is None else {"already_revoked": True}
            await conn.execute(
                "UPDATE devices SET revoked_at = COALESCE(revoked_at, $1) WHERE device_id = $2",
                now,
                device_id,
            )
            await conn.execute(
                "UPDATE credentials SET revoked_at = COALESCE(revoked_at, $1)"
                " WHERE role = 'device' AND subject = $2",
                now,
                device_id,
            )
            await insert_audit(conn, now, actor, "device.revoke", device_id, detail)

    async def add_operator(self, name: str, token_hash: str, now: float, *, actor: str) -> None:
        async with self._transaction() as conn:
            status = await conn.execute(
                "INSERT INTO operators (name, created_at) VALUES ($1, $2)"
                " ON CONFLICT (name) DO NOTHING",
                name,
                now,
            )
            if rows_changed(status) == 0:
                raise Conflict(f"operator {name!r} already exists")
            await self._add_credential(conn, token_hash, "operator", name, now)
            await insert_audit(conn, now, actor, "operator.add", name, {})

    async def revoke_operator(self, name: str, now: float, *, actor: str) -> None:
        async with self._transaction() as conn:
            row = await conn.fetchrow(
                "SELECT revoked_at FROM operators WHERE name = $1 FOR UPDATE", name
            )
            if row is None:
                raise NotFound(f"no operator {name!r}")
            detail = {} if row[0] is None else {"already_revoked": True}
            await conn.execute(
                "UPDATE operators SET revoked_at = COALESCE(revoked_at, $1) WHERE name = $2",
                now,
                name,
            )
            await conn.execute(
                "UPDATE credentials SET revoked_at = COALESCE(revoked_at, $1)"
                " WHERE role = 'operator' AND subject = $2",
                now,
                name,
            )
            await insert_audit(conn, now, actor, "operator.revoke", name, detail)

    async def rotate_device_token(
        self, device_id: str, token_hash: str, now: float, *, actor: str
    ) -> None:
        async with self._transaction() as conn:
            row = await conn.fetchrow(
                "SELECT revoked_at FROM devices WHERE device_id = $1 FOR UPDATE", device_id
            )
            if row is None:
                raise NotFound(f"no device {device_id!r}")
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
        row = await self._one(
            "SELECT c.role, c.subject, d.site_id FROM credentials c"
            " LEFT JOIN devices d ON c.role = 'device' AND d.device_id = c.subject"
            " WHERE c.token_hash = $1 AND c.revoked_at IS NULL AND d.revoked_at IS NULL",
            token_hash,
        )
        if row is None:
            return None
        role, subject, site_id = row
        if role == "device":
            return Principal("device", subject, device_id=subject, site_id=site_id)
        return Principal("operator", subject)

    async def get_device(self, device_id: str) -> DeviceRecord | None:
        row = await self._one(DEVICE_SELECT + " WHERE device_id = $1", device_id)
        return device_row(row) if row else None

    async def list_devices(self) -> list[DeviceRecord]:
        return [device_row(r) for r in await self._all(DEVICE_SELECT + " ORDER BY device_id")]

    async def record_sync(self, device_id: str, status: dict[str, Any], now: float) -> None:
        await self._execute(
            "UPDATE devices SET last_sync_at = $1, last_sync = $2 WHERE device_id = $3",
            now,
            json.dumps(status),
            device_id,
        )

    # ------------------------------------------------------------- batches, watermarks

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        row = await self._one(BATCH_SELECT + " WHERE batch_id = $1", batch_id)
        return batch_row(row) if row else None

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
        held = await self._one(BATCH_SELECT + " WHERE batch_id = $1", batch.batch_id)
        assert held is not None  # ON CONFLICT waited for the other's commit
        return batch_row(held)

    async def overlapping_batch(
        self, device_id: str, stream: Stream, first_seq: int, last_seq: int
    ) -> str | None:
        row = await self._one(
            "SELECT batch_id FROM batches WHERE device_id = $1 AND stream = $2"
            " AND last_seq >= $3 AND first_seq <= $4 LIMIT 1",
            device_id,
            stream.value,
            first_seq,
            last_seq,
        )
        return str(row[0]) if row else None

    async def held_ranges(
        self, device_id: str, stream: Stream, above: int, limit: int
    ) -> list[tuple[int, int]]:
        rows = await self._all(
            "SELECT first_seq, last_seq FROM batches WHERE device_id = $1 AND stream = $2"
            " AND last_seq > $3 ORDER BY last_seq LIMIT $4",
            device_id,
            stream.value,
            above,
            limit,
        )
        return [(int(first), int(last)) for first, last in rows]

    async def watermarks(self, device_id: str) -> dict[Stream, int]:
        rows = await self._all(
            "SELECT stream, acked_seq FROM watermarks WHERE device_id = $1", device_id
        )
        return {Stream(stream): int(seq) for stream, seq in rows}

    # ------------------------------------------------------------- raw requests

    async def add_raw_request(self, request: RawRequestRecord) -> None:
        async with self._transaction() as conn:
            status = await conn.execute(
                f"INSERT INTO raw_requests ({catalog_rows.RAW_INSERT_COLUMNS})"
                f" VALUES ({_marks(10)})"
                " ON CONFLICT (request_id) DO NOTHING",
                *catalog_rows.raw_request_values(request),
            )
            if rows_changed(status) == 0:
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
        row = await self._one(RAW_SELECT + " WHERE request_id = $1", request_id)
        return raw_row(row) if row else None

    async def list_raw_requests(
        self, *, device_id: str | None, state: RawRequestState | None, limit: int
    ) -> list[RawRequestRecord]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("device_id", device_id), ("state", state)):
            if value is not None:
                params.append(value)
                clauses.append(f"{column} = ${len(params)}")
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        params.append(limit)
        rows = await self._all(
            RAW_SELECT + where + f" ORDER BY created_at, created_order LIMIT ${len(params)}",
            *params,
        )
        return [raw_row(r) for r in rows]

    async def pending_raw_requests(self, device_id: str, now: float) -> list[RawRequestRecord]:
        rows = await self._all(
            RAW_SELECT + " WHERE device_id = $1 AND state = 'requested' AND expires_at > $2"
            " ORDER BY created_at, created_order LIMIT 1000",
            device_id,
            now,
        )
        return [raw_row(r) for r in rows]

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
                moved += await _move_raw_request(conn, device_id, request_id, state, now, upload_id)
        return moved

    async def expire_raw_requests(self, now: float) -> int:
        status = await self._execute(
            "UPDATE raw_requests SET state = 'expired', state_changed_at = $1"
            " WHERE state = 'requested' AND expires_at <= $1",
            now,
        )
        return rows_changed(status)

    # ------------------------------------------------------------- uploads, blobs

    async def record_upload(self, upload: UploadRecord, *, actor: str) -> bool:
        async with self._transaction() as conn:
            status = await conn.execute(
                f"INSERT INTO uploads ({catalog_rows.UPLOAD_COLUMNS})"
                f" VALUES ({_marks(6)})"
                " ON CONFLICT (upload_id) DO NOTHING",
                *catalog_rows.upload_values(upload),
            )
            if rows_changed(status) == 0:
                return False  # recorded already, by this instance or another
            if upload.sha256 is not None:
                await conn.execute(
                    f"INSERT INTO blobs ({catalog_rows.BLOB_COLUMNS})"
                    f" VALUES ({_marks(5)})"
                    " ON CONFLICT (sha256) DO NOTHING",
                    *catalog_rows.blob_values(upload),
                )
            request_id = upload.metadata.get("request_id")
            delivered = 0
            if request_id:
                delivered = await _move_raw_request(
                    conn,
                    upload.device_id,
                    request_id,
                    "delivered",
                    upload.completed_at,
                    upload.upload_id,
                )
            subject, detail = catalog_rows.upload_audit(upload, delivered=bool(delivered))
            await insert_audit(conn, upload.completed_at, actor, "upload.complete", subject, detail)
        return True

    async def has_blob(self, sha256: str) -> bool:
        return await self._one("SELECT 1 FROM blobs WHERE sha256 = $1", sha256) is not None

    async def device_uploaded_blob(self, device_id: str, sha256: str) -> bool:
        row = await self._one(
            "SELECT 1 FROM uploads WHERE device_id = $1 AND sha256 = $2 LIMIT 1",
            device_id,
            sha256,
        )
        return row is not None

    # ------------------------------------------------------------- audit

    async def list_audit(self, *, after_id: int, limit: int) -> list[AuditEvent]:
        rows = await self._all(
            "SELECT event_id, at, actor, action, subject, detail FROM audit_log"
            " WHERE event_id > $1 ORDER BY event_id LIMIT $2",
            after_id,
            limit,
        )
        return [AuditEvent(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]


def _marks(count: int) -> str:
    """``count`` PostgreSQL placeholders (``$1, $2, ...``) for a VALUES list."""
    return ", ".join(f"${n}" for n in range(1, count + 1))
