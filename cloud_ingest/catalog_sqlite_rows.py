"""SQLite parts of the catalog: migrations and the one raw-request state move
(``catalog_sqlite.py`` holds the writes; the reads and statements both backends
share are in ``catalog_queries.py``, the SELECT lists and row mapping in
``catalog_rows.py``)."""

from __future__ import annotations

import aiosqlite

from cloud_ingest import catalog_queries
from cloud_ingest.catalog import RawRequestState
from cloud_ingest.catalog_schema import MIGRATIONS, SCHEMA_VERSION
from cloud_ingest.errors import CatalogVersionError

__all__ = ["migrate", "move_raw_request"]


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
        *catalog_queries.move_raw_request(device_id, request_id, state, now, upload_id)
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
