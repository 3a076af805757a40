"""The catalog's two backends for the one catalog test suite (``test_catalog.py``).

``catalog_backend`` is parametrized over SQLite (a file in ``tmp_path``) and
PostgreSQL (a fresh database on the session's server, ``tests/conftest.py``):
each gives a way to open another catalog on the same store (another process,
another ingest instance), and to read and set the stored schema version.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from cloud_ingest.catalog import Catalog
from cloud_ingest.catalog_postgres import PostgresCatalog
from cloud_ingest.catalog_schema import SCHEMA_VERSION as SQLITE_VERSION
from cloud_ingest.catalog_schema_postgres import SCHEMA_VERSION as POSTGRES_VERSION
from cloud_ingest.catalog_sqlite import SqliteCatalog
from tests.support.postgres import PostgresServer

__all__ = ["CatalogBackend", "catalog", "catalog_backend"]


@dataclass
class CatalogBackend:
    name: str
    open: Callable[[], Awaitable[Catalog]]  # another catalog on the same store
    version: Callable[[], Awaitable[int]]
    set_version: Callable[[int], Awaitable[None]]
    schema_version: int  # what this yardlink migrates to
    stored_text: Callable[[], Awaitable[bytes]]  # every byte the store holds, for leak checks


def _sqlite(path: Path) -> CatalogBackend:
    async def version() -> int:
        with closing(sqlite3.connect(path)) as db:
            return int(db.execute("PRAGMA user_version").fetchone()[0])

    async def set_version(value: int) -> None:
        with closing(sqlite3.connect(path)) as db:
            db.execute(f"PRAGMA user_version = {value}")

    async def stored_text() -> bytes:
        wal = path.with_name(path.name + "-wal")
        return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")

    return CatalogBackend(
        "sqlite",
        lambda: SqliteCatalog.open(path),
        version,
        set_version,
        SQLITE_VERSION,
        stored_text,
    )


def _postgres(url: str) -> CatalogBackend:
    async def fetch(sql: str) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    async def version() -> int:
        return int((await fetch("SELECT version FROM yardlink_schema"))[0][0])

    async def set_version(value: int) -> None:
        await fetch(f"UPDATE yardlink_schema SET version = {value}")

    async def stored_text() -> bytes:
        tables = await fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        dump = [repr(await fetch(f"SELECT * FROM {t[0]}")) for t in tables]
        return "\n".join(dump).encode()

    return CatalogBackend(
        "postgresql",
        lambda: PostgresCatalog.open(url, pool_size=4),
        version,
        set_version,
        POSTGRES_VERSION,
        stored_text,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
async def catalog_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[CatalogBackend]:
    if request.param == "sqlite":
        yield _sqlite(tmp_path / "catalog.db")
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    url = await server.create_database()
    try:
        yield _postgres(url)
    finally:
        await server.drop_database(url)


@pytest.fixture
async def catalog(catalog_backend: CatalogBackend) -> AsyncIterator[Catalog]:
    opened = await catalog_backend.open()
    try:
        yield opened
    finally:
        await opened.close()
