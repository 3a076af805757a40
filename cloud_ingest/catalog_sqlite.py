"""The default catalog: SQLite through aiosqlite, WAL, migrated on open.

One connection per process; aiosqlite runs every statement on one worker
thread, and an asyncio lock keeps multi-statement transactions whole.
Another process (``yardlink ingest device add`` while the server runs) may
open the same file: WAL lets readers and one writer share it, and
``busy_timeout`` makes a writer wait instead of failing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite

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
from cloud_ingest.catalog_rows import BATCH_SELECT, batch_row
from cloud_ingest.catalog_sqlite_rows import changed, migrate
from cloud_ingest.errors import CatalogUnavailable, CatalogVersionError, Conflict, NotFound
from cloud_ingest.group_commit import GroupCommit
from cloud_ingest.principal import Principal
from cloud_ingest.sql_dialects import Read, render
from cloud_ingest.sqlite_database import (
    SqliteDatabase,
    insert_audit,
    make_private_dir,
    make_private_file,
)
from sync.protocol import Stream

__all__ = ["CatalogUnavailable", "CatalogVersionError", "SqliteCatalog", "make_private_dir"]

T = TypeVar("T")


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

    async def _read(self, query: Read[T]) -> T:
        """Run one of the shared reads (``catalog_queries.py``) in this dialect."""
        return query.shape(await self._all(render(query.sql, "sqlite"), query.params))

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
        await self._revoke("device", device_id, now, actor=actor)

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
        await self._revoke("operator", name, now, actor=actor)

    async def _revoke(self, role: PrincipalRole, subject: str, now: float, *, actor: str) -> None:
        async with self._transaction() as db:
            row = await self._one(*catalog_queries.revoked_at(role, subject))
            if not row:
                raise NotFound(f"no {role} {subject!r}")
            # a repeated revoke changes nothing but is still an operator's act: audited,
            # and marked, so the log does not read as if it was revoked twice
            detail = {} if row[0] is None else {"already_revoked": True}
            for sql, params in catalog_queries.revoke(role, subject, now):
                await db.execute(sql, params)
            await insert_audit(db, now, actor, f"{role}.revoke", subject, detail)

    async def rotate_device_token(
        self, device_id: str, token_hash: str, now: float, *, actor: str
    ) -> None:
        async with self._transaction() as db:
            row = await self._one(*catalog_queries.revoked_at("device", device_id))
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
        return await self._read(catalog_queries.principal_for_token(token_hash))

    async def get_device(self, device_id: str) -> DeviceRecord | None:
        return await self._read(catalog_queries.device(device_id))

    async def list_devices(self) -> list[DeviceRecord]:
        return await self._read(catalog_queries.devices())

    async def record_sync(self, device_id: str, status: dict[str, Any], now: float) -> None:
        async with self._transaction() as db:
            await db.execute(*catalog_queries.record_sync(device_id, status, now))

    # ------------------------------------------------------------- batches, watermarks

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        return await self._read(catalog_queries.batch(batch_id))

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
        async with self._transaction() as db:
            for request_id in request_ids:
                moved += await changed(
                    db,
                    catalog_queries.move_raw_request(device_id, request_id, state, now, upload_id),
                )
        return moved

    async def expire_raw_requests(self, now: float) -> int:
        async with self._transaction() as db:
            return await changed(db, catalog_queries.expire_raw_requests(now))

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
            delivery = catalog_queries.deliver_raw_request(upload)
            delivered = 0 if delivery is None else await changed(db, delivery)
            subject, detail = catalog_rows.upload_audit(upload, delivered=bool(delivered))
            await insert_audit(db, upload.completed_at, actor, "upload.complete", subject, detail)
        return True

    async def has_blob(self, sha256: str) -> bool:
        return await self._read(catalog_queries.has_blob(sha256))

    async def device_uploaded_blob(self, device_id: str, sha256: str) -> bool:
        return await self._read(catalog_queries.device_uploaded_blob(device_id, sha256))

    # ------------------------------------------------------------- audit

    async def list_audit(self, *, after_id: int, limit: int) -> list[AuditEvent]:
        return await self._read(catalog_queries.list_audit(after_id=after_id, limit=limit))


def _marks(count: int) -> str:
    """``count`` SQLite placeholders for a VALUES list."""
    return ", ".join("?" * count)
