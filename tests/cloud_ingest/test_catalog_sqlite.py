"""SqliteCatalog on a real file: migrations, credentials, batches, watermarks."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from cloud_ingest.catalog import BatchRecord
from cloud_ingest.catalog_schema import SCHEMA_VERSION
from cloud_ingest.catalog_sqlite import CatalogVersionError, SqliteCatalog
from cloud_ingest.credentials import hash_token, new_token
from cloud_ingest.errors import Conflict, NotFound
from sync.protocol import Stream


def _batch(batch_id: str = "gate-01.events.1-10", last: int = 10) -> BatchRecord:
    return BatchRecord(
        batch_id,
        "gate-01",
        "yard-a",
        Stream.EVENTS,
        1,
        last,
        10,
        "aa" * 32,
        100,
        ("events/site=yard-a/date=2025-01-01/x.parquet",),
        1.0,
    )


async def test_schema_is_migrated_once_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    catalog = await SqliteCatalog.open(path)
    await catalog.add_device("gate-01", "yard-a", hash_token("t"), 1.0, actor="test")
    await catalog.close()
    catalog = await SqliteCatalog.open(path)  # reopening keeps data, runs nothing twice
    assert (await catalog.get_device("gate-01")) is not None
    await catalog.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = {row[1] for row in db.execute("PRAGMA table_info(devices)")}
        assert {"last_sync_at", "last_sync"} <= columns  # migration 2


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(CatalogVersionError):
        await SqliteCatalog.open(path)


async def test_credentials_are_hashed_and_revocable(tmp_path: Path) -> None:
    catalog = await SqliteCatalog.open(tmp_path / "catalog.db")
    try:
        token = new_token("device")
        await catalog.add_device("gate-01", "yard-a", hash_token(token), 1.0, actor="test")
        with pytest.raises(Conflict):
            await catalog.add_device("gate-01", "yard-b", hash_token("other"), 1.0, actor="test")
        principal = await catalog.principal_for_token(hash_token(token))
        assert principal is not None
        assert (principal.role, principal.device_id, principal.site_id) == (
            "device",
            "gate-01",
            "yard-a",
        )
        await catalog.revoke_device("gate-01", 2.0, actor="test")
        assert await catalog.principal_for_token(hash_token(token)) is None
        with pytest.raises(NotFound):
            await catalog.revoke_device("gate-02", 2.0, actor="test")
        op_token = new_token("operator")
        await catalog.add_operator("alice", hash_token(op_token), 1.0, actor="test")
        operator = await catalog.principal_for_token(hash_token(op_token))
        assert operator is not None and operator.is_operator
    finally:
        await catalog.close()
    raw = (tmp_path / "catalog.db").read_bytes() + _wal_bytes(tmp_path)
    assert token.encode() not in raw and op_token.encode() not in raw


def _wal_bytes(tmp_path: Path) -> bytes:
    wal = tmp_path / "catalog.db-wal"
    return wal.read_bytes() if wal.exists() else b""


async def test_record_batch_is_first_writer_wins_and_raises_watermark(tmp_path: Path) -> None:
    catalog = await SqliteCatalog.open(tmp_path / "catalog.db")
    try:
        await catalog.add_device("gate-01", "yard-a", hash_token("t"), 1.0, actor="test")
        first = _batch()
        assert await catalog.record_batch(first) is first
        held = await catalog.record_batch(replace(first, sha256="bb" * 32))
        assert held == first
        await catalog.record_batch(_batch("gate-01.events.30-40", last=40))
        await catalog.record_batch(_batch("gate-01.events.11-20", last=20))
        assert await catalog.watermarks("gate-01") == {Stream.EVENTS: 40}
        assert await catalog.get_batch("gate-01.events.11-20") is not None
    finally:
        await catalog.close()
