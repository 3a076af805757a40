"""The default catalog: SQLite through aiosqlite, WAL, migrated on open.

One connection per process; aiosqlite runs every statement on one worker
thread, and an asyncio lock keeps multi-statement transactions whole.
Another process (``yardlink ingest device add`` while the server runs) may
open the same file: WAL lets readers and one writer share it, and
``busy_timeout`` makes a writer wait instead of failing.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Literal

import aiosqlite

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
from cloud_ingest.catalog_sqlite_rows import migrate, move_raw_request
from cloud_ingest.errors import CatalogUnavailable, CatalogVersionError, Conflict, NotFound
from cloud_ingest.group_commit import GroupCommit
from cloud_ingest.principal import Principal
from cloud_ingest.sqlite_database import (
    SqliteDatabase,
    insert_audit,
    make_private_dir,
    make_private_file,
)
from sync.protocol import Stream

__all__ = ["CatalogUnavailable", "CatalogVersionError", "SqliteCatalog", "make_private_dir"]


class SqliteCatalog(SqliteDatabase):
    """:class:`cloud_ingest.catalog.Catalog` on one SQLite file.

    Batches recorded concurrently share one transaction (``group_commit.py``):
    with ``synchronous=FULL`` each commit is a WAL fsync, one per group.
    """

    def __init__(self, db: aiosqlite.Connection) -> None:
        super().__init__(db)
        self._batch_commits: GroupCommit[BatchRecord, BatchRecord] = GroupCommit(
            self._record_batches
        )

    async def close(self) -> None:
        await self._batch_commits.drain()
        await super().close()

    @classmethod
    async def open(
        cls, path: Path, *, synchronous: Literal["FULL", "NORMAL"] = "FULL"
    ) -> SqliteCatalog:
        try:
            make_private_dir(path.parent)
            make_private_file(path)  # SQLite gives -wal and -shm the mode of the database
            db = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise CatalogUnavailable(f"cannot open catalog {path}: {exc}") from exc
        try:
            await db.execute("PRAGMA busy_timeout = 10000")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute(f"PRAGMA synchronous = {synchronous}")
            await db.execute("PRAGMA foreign_keys = ON")
            await migrate(db)
        except (OSError, sqlite3.Error) as exc:
            await db.close()
            raise CatalogUnavailable(f"cannot open catalog {path}: {exc}") from exc
        except BaseException:
            await db.close()
            raise
        return cls(db)

    # ------------------------------------------------------------- devices, credentials

    async def add_device(
        self, device_id: str, site_id: str, token_hash: str, now: float, *, actor: str
    ) -> None:
        async with self._transaction() as db:
            if await self._one("SELECT 1 FROM devices WHERE device_id = ?", (device_id,)):
                raise Conflict(f"device {device_id!r} already exists")
            await db.execute(
                "INSERT INTO devices (device_id, site_id, created_at) VALUES (?, ?, ?)",
                (device_id, site_id, now),
            )
            await db.execute(
                "INSERT INTO credentials (token_hash, role, subject, created_at)"
                " VALUES (?, 'device', ?, ?)",
                (token_hash, device_id, now),
            )
            await insert_audit(db, now, actor, "device.add", device_id, {"site_id": site_id})

    async def revoke_device(self, device_id: str, now: float, *, actor: str) -> None:
        async with self._transaction() as db:
            row = await self._one(
                "SELECT revoked_at FROM devices WHERE device_id = ?", (device_id,)
            )
            if not row:
                raise NotFound(f"no device {device_id!r}")
            # a repeated revoke changes nothing but is still an operator's act: audited,
            # and marked, so the log does not read as if the device was revoked twice
            detail = {} if row[0] is None else {"already_revoked": True}
            await db.execute(
                "UPDATE devices SET revoked_at = COALESCE(revoked_at, ?) WHERE device_id = ?",
                (now, device_id),
            )
            await db.execute(
                "UPDATE credentials SET revoked_at = COALESCE(revoked_at, ?)"
                " WHERE role = 'device' AND subject = ?",
                (now, device_id),
            )
            await insert_audit(db, now, actor, "device.revoke", device_id, detail)

    async def add_operator(self, name: str, token_hash: str, now: float, *, actor: str) -> None:
        async with self._transaction() as db:
            if await self._one("SELECT 1 FROM operators WHERE name = ?", (name,)):
                raise Conflict(f"operator {name!r} already exists")
            await db.execute("INSERT INTO operators (name, created_at) VALUES (?, ?)", (name, now))
            await db.execute(
                "INSERT INTO credentials (token_hash, role, subject, created_at)"
                " VALUES (?, 'operator', ?, ?)",
                (token_hash, name, now),
            )
            await insert_audit(db, now, actor, "operator.add", name, {})

    async def revoke_operator(self, name: str, now: float, *, actor: str) -> None:
        async with self._transaction() as db:
            row = await self._one("SELECT revoked_at FROM operators WHERE name = ?", (name,))
            if not row:
                raise NotFound(f"no operator {name!r}")
            detail = {} if row[0] is None else {"already_revoked": True}
            await db.execute(
                "UPDATE operators SET revoked_at = COALESCE(revoked_at, ?) WHERE name = ?",
                (now, name),
            )
            await db.execute(
                "UPDATE credentials SET revoked_at = COALESCE(revoked_at, ?)"
                " WHERE role = 'operator' AND subject = ?",
                (now, name),
            )
            await insert_audit(db, now, actor, "operator.revoke", name, detail)

    async def rotate_device_token(
        self, device_id: str, token_hash: str, now: float, *, actor: str
    ) -> None:
        async with self._transaction() as db:
            row = await self._one(
                "SELECT revoked_at FROM devices WHERE device_id = ?", (device_id,)
            )
            if not row:
                raise NotFound(f"no device {device_id!r}")
            if row[0] is not None:
                raise Conflict(f"device {device_id!r} is revoked; register it again instead")
            await db.execute(
                "UPDATE credentials SET revoked_at = ?"
                " WHERE role = 'device' AND subject = ? AND revoked_at IS NULL",
                (now, device_id),
            )
            await db.execute(
                "INSERT INTO credentials (token_hash, role, subject, created_at)"
                " VALUES (?, 'device', ?, ?)",
                (token_hash, device_id, now),
            )
            await insert_audit(db, now, actor, "device.rotate", device_id, {})

    async def record_audit(
        self, now: float, actor: str, action: str, subject: str, detail: dict[str, Any]
    ) -> None:
        async with self._transaction() as db:
            await insert_audit(db, now, actor, action, subject, detail)

    async def principal_for_token(self, token_hash: str) -> Principal | None:
        row = await self._one(
            "SELECT c.role, c.subject, d.site_id FROM credentials c"
            " LEFT JOIN devices d ON c.role = 'device' AND d.device_id = c.subject"
            " WHERE c.token_hash = ? AND c.revoked_at IS NULL AND d.revoked_at IS NULL",
            (token_hash,),
        )
        if row is None:
            return None
        role, subject, site_id = row
        if role == "device":
            return Principal("device", subject, device_id=subject, site_id=site_id)
        return Principal("operator", subject)

    async def get_device(self, device_id: str) -> DeviceRecord | None:
        row = await self._one(DEVICE_SELECT + " WHERE device_id = ?", (device_id,))
        return device_row(row) if row else None

    async def list_devices(self) -> list[DeviceRecord]:
        return [device_row(r) for r in await self._all(DEVICE_SELECT + " ORDER BY device_id")]

    async def record_sync(self, device_id: str, status: dict[str, Any], now: float) -> None:
        async with self._transaction() as db:
            await db.execute(
                "UPDATE devices SET last_sync_at = ?, last_sync = ? WHERE device_id = ?",
                (now, json.dumps(status), device_id),
            )

    # ------------------------------------------------------------- batches, watermarks

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        row = await self._one(BATCH_SELECT + " WHERE batch_id = ?", (batch_id,))
        return batch_row(row) if row else None

    async def record_batch(self, batch: BatchRecord) -> BatchRecord:
        return await self._batch_commits.submit(batch)

    async def _record_batches(self, batches: list[BatchRecord]) -> list[BatchRecord]:
        """One transaction (one WAL fsync) for the batches recorded concurrently;
        each gets the record held under its id (the first writer's)."""
        async with self._transaction() as db:
            ids = sorted({b.batch_id for b in batches})
            rows = await self._all(
                BATCH_SELECT + f" WHERE batch_id IN ({', '.join('?' * len(ids))})", ids
            )
            held = {record.batch_id: record for record in map(batch_row, rows)}
            new = []
            for batch in batches:
                if batch.batch_id not in held:
                    held[batch.batch_id] = batch
                    new.append(batch)
            await db.executemany(
                f"INSERT INTO batches ({catalog_rows.BATCH_COLUMNS}) VALUES ({_marks(11)})",
                [catalog_rows.batch_values(b) for b in new],
            )
            await db.executemany(
                "INSERT INTO watermarks (device_id, stream, acked_seq) VALUES (?, ?, ?)"
                " ON CONFLICT (device_id, stream)"
                " DO UPDATE SET acked_seq = MAX(acked_seq, excluded.acked_seq)",
                [(b.device_id, b.stream.value, b.last_seq) for b in new],
            )
        return [held[b.batch_id] for b in batches]

    async def overlapping_batch(
        self, device_id: str, stream: Stream, first_seq: int, last_seq: int
    ) -> str | None:
        row = await self._one(
            "SELECT batch_id FROM batches WHERE device_id = ? AND stream = ? AND last_seq >= ?"
            " AND first_seq <= ? LIMIT 1",
            (device_id, stream.value, first_seq, last_seq),
        )
        return str(row[0]) if row else None

    async def held_ranges(
        self, device_id: str, stream: Stream, above: int, limit: int
    ) -> list[tuple[int, int]]:
        rows = await self._all(
            "SELECT first_seq, last_seq FROM batches WHERE device_id = ? AND stream = ?"
            " AND last_seq > ? ORDER BY last_seq LIMIT ?",  # index batches_device_stream
            (device_id, stream.value, above, limit),
        )
        return [(int(first), int(last)) for first, last in rows]

    async def watermarks(self, device_id: str) -> dict[Stream, int]:
        rows = await self._all(
            "SELECT stream, acked_seq FROM watermarks WHERE device_id = ?", (device_id,)
        )
        return {Stream(stream): int(seq) for stream, seq in rows}

    # ------------------------------------------------------------- raw requests

    async def add_raw_request(self, request: RawRequestRecord) -> None:
        async with self._transaction() as db:
            if await self._one(
                "SELECT 1 FROM raw_requests WHERE request_id = ?", (request.request_id,)
            ):
                raise Conflict(f"raw request {request.request_id!r} already exists")
            await db.execute(
                f"INSERT INTO raw_requests ({catalog_rows.RAW_INSERT_COLUMNS})"
                f" VALUES ({_marks(10)})",
                catalog_rows.raw_request_values(request),
            )
            await insert_audit(
                db,
                request.created_at,
                request.created_by,
                "raw_request.create",
                request.request_id,
                catalog_rows.raw_request_audit(request),
            )

    async def get_raw_request(self, request_id: str) -> RawRequestRecord | None:
        row = await self._one(RAW_SELECT + " WHERE request_id = ?", (request_id,))
        return raw_row(row) if row else None

    async def list_raw_requests(
        self, *, device_id: str | None, state: RawRequestState | None, limit: int
    ) -> list[RawRequestRecord]:
        clauses, params = [], []
        if device_id is not None:
            clauses.append("device_id = ?")
            params.append(device_id)
        if state is not None:
            clauses.append("state = ?")
            params.append(state)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = await self._all(
            RAW_SELECT + where + " ORDER BY created_at, rowid LIMIT ?", [*params, limit]
        )
        return [raw_row(r) for r in rows]

    async def pending_raw_requests(self, device_id: str, now: float) -> list[RawRequestRecord]:
        rows = await self._all(
            RAW_SELECT + " WHERE device_id = ? AND state = 'requested' AND expires_at > ?"
            " ORDER BY created_at, rowid LIMIT 1000",
            (device_id, now),
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
        async with self._transaction() as db:
            for request_id in request_ids:
                moved += await move_raw_request(db, device_id, request_id, state, now, upload_id)
        return moved

    async def expire_raw_requests(self, now: float) -> int:
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE raw_requests SET state = 'expired', state_changed_at = ?"
                " WHERE state = 'requested' AND expires_at <= ?",
                (now, now),
            )
            return cursor.rowcount

    # ------------------------------------------------------------- uploads, blobs

    async def record_upload(self, upload: UploadRecord, *, actor: str) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute(
                f"INSERT OR IGNORE INTO uploads ({catalog_rows.UPLOAD_COLUMNS})"
                f" VALUES ({_marks(6)})",
                catalog_rows.upload_values(upload),
            )
            if cursor.rowcount == 0:
                return False  # recorded already: on_complete re-run after a crash
            if upload.sha256 is not None:
                await db.execute(
                    f"INSERT OR IGNORE INTO blobs ({catalog_rows.BLOB_COLUMNS})"
                    f" VALUES ({_marks(5)})",
                    catalog_rows.blob_values(upload),
                )
            request_id = upload.metadata.get("request_id")
            delivered = 0
            if request_id:
                delivered = await move_raw_request(
                    db,
                    upload.device_id,
                    request_id,
                    "delivered",
                    upload.completed_at,
                    upload.upload_id,
                )
            subject, detail = catalog_rows.upload_audit(upload, delivered=bool(delivered))
            await insert_audit(db, upload.completed_at, actor, "upload.complete", subject, detail)
        return True

    async def has_blob(self, sha256: str) -> bool:
        return await self._one("SELECT 1 FROM blobs WHERE sha256 = ?", (sha256,)) is not None

    async def device_uploaded_blob(self, device_id: str, sha256: str) -> bool:
        row = await self._one(
            "SELECT 1 FROM uploads WHERE device_id = ? AND sha256 = ? LIMIT 1",
            (device_id, sha256),
        )
        return row is not None

    # ------------------------------------------------------------- audit

    async def list_audit(self, *, after_id: int, limit: int) -> list[AuditEvent]:
        rows = await self._all(
            "SELECT event_id, at, actor, action, subject, detail FROM audit_log"
            " WHERE event_id > ? ORDER BY event_id LIMIT ?",
            (after_id, limit),
        )
        return [AuditEvent(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]


def _marks(count: int) -> str:
    """``count`` SQLite placeholders for a VALUES list."""
    return ", ".join("?" * count)
