"""SQLite parts of the catalog: migrations and running a shared statement
(``catalog_sqlite.py`` holds the writes; the reads and statements both backends
share are in ``catalog_queries.py``, the SELECT lists and row mapping in
``catalog_rows.py``)."""

from __future__ import annotations

import aiosqlite

from cloud_ingest.catalog_schema import MIGRATIONS, SCHEMA_VERSION
from cloud_ingest.errors import CatalogVersionError
from cloud_ingest.sql_dialects import Statement

__all__ = ["changed", "migrate"]


async def changed(db: aiosqlite.Connection, statement: Statement) -> int:
    """Run one shared statement in the caller's transaction; how many rows it changed."""
    cursor = await db.execute(*statement)
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
