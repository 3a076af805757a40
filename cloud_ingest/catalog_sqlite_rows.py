"""Rows of the SQLite catalog: migrations, the SELECT lists and row-to-record mapping,
and the one raw-request state move (``catalog_sqlite.py`` holds the queries)."""

from __future__ import annotations

import json

import aiosqlite

from cloud_ingest.catalog import BatchRecord, DeviceRecord, RawRequestRecord, RawRequestState
from cloud_ingest.catalog_schema import MIGRATIONS, SCHEMA_VERSION
from cloud_ingest.errors import CatalogVersionError
from sync.protocol import Stream

__all__ = [
    "BATCH_SELECT",
    "DEVICE_SELECT",
    "RAW_SELECT",
    "batch_row",
    "device_row",
    "migrate",
    "move_raw_request",
    "raw_row",
]


async def move_raw_request(
    db: aiosqlite.Connection,
    device_id: str,
    request_id: str,
    state: RawRequestState,
    now: float,
    upload_id: str | None,
) -> int:
    """Move one of the device's *requested* raw requests to ``state``; 1 if it moved."""
    cursor = await db.execute(
        "UPDATE raw_requests SET state = ?, state_changed_at = ?,"
        " upload_id = COALESCE(?, upload_id)"
        " WHERE request_id = ? AND device_id = ? AND state = 'requested'",
        (state, now, upload_id, request_id, device_id),
    )
    return cursor.rowcount


async def migrate(db: aiosqlite.Connection) -> None:
    row = await (await db.execute("PRAGMA user_version")).fetchone()
    current = int(row[0]) if row else 0
    if current > SCHEMA_VERSION:
        raise CatalogVersionError(
            f"catalog schema v{current} is newer than this yardlink (v{SCHEMA_VERSION})"
        )
    for version, script in MIGRATIONS:
        if version > current:
            await db.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;"
            )


DEVICE_SELECT = (
    "SELECT device_id, site_id, created_at, revoked_at, last_sync_at, last_sync FROM devices"
)
BATCH_SELECT = (
    "SELECT batch_id, device_id, site_id, stream, first_seq, last_seq, records, sha256, size,"
    " lake_paths, received_at FROM batches"
)
RAW_SELECT = (
    "SELECT request_id, device_id, created_by, created_at, expires_at, state, seq, since, until,"
    " reason, state_changed_at, upload_id FROM raw_requests"
)


def device_row(row: aiosqlite.Row) -> DeviceRecord:
    last_sync = json.loads(row[5]) if row[5] else None
    return DeviceRecord(row[0], row[1], row[2], row[3], row[4], last_sync)


def batch_row(row: aiosqlite.Row) -> BatchRecord:
    return BatchRecord(
        batch_id=row[0],
        device_id=row[1],
        site_id=row[2],
        stream=Stream(row[3]),
        first_seq=row[4],
        last_seq=row[5],
        records=row[6],
        sha256=row[7],
        size=row[8],
        lake_paths=tuple(json.loads(row[9])),
        received_at=row[10],
    )


def raw_row(row: aiosqlite.Row) -> RawRequestRecord:
    return RawRequestRecord(*row)
