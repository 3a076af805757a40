"""The catalog on both backends (SQLite and PostgreSQL, ``catalog_backends.py``): one suite.

Migrations, credentials, batches and watermarks, raw requests, uploads, the
audit log; and the exactly-once guarantees under instances that write at the
same time (separate connections, pools or processes' worth of catalogs on one
store), which rest on the database, not on a lock inside one process.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from cloud_ingest.catalog import BatchRecord, Catalog, RawRequestRecord, UploadRecord
from cloud_ingest.catalog_sqlite import SqliteCatalog
from cloud_ingest.credentials import hash_token, new_token
from cloud_ingest.errors import CatalogVersionError, Conflict, NotFound
from sync.protocol import Stream
from tests.cloud_ingest.catalog_backends import CatalogBackend


def _batch(batch_id: str = "gate-01.events.1-10", last: int = 10, first: int = 1) -> BatchRecord:
    return BatchRecord(
        batch_id,
        "gate-01",
        "yard-a",
        Stream.EVENTS,
        first,
        last,
        10,
        "aa" * 32,
        100,
        ("events/site=yard-a/date=2025-01-01/x.parquet",),
        1.0,
    )


def _raw(
    request_id: str, *, created_at: float = 1.0, device_id: str = "gate-01"
) -> RawRequestRecord:
    return RawRequestRecord(
        request_id, device_id, "alice", created_at, created_at + 100, seq=7, reason="check"
    )


async def test_schema_is_migrated_once_and_kept(catalog_backend: CatalogBackend) -> None:
    catalog = await catalog_backend.open()
    await catalog.add_device("gate-01", "yard-a", hash_token("t"), 1.0, actor="test")
    await catalog.close()
    catalog = await catalog_backend.open()  # reopening keeps data, runs nothing twice
    try:
        device = await catalog.get_device("gate-01")
        assert device is not None and device.site_id == "yard-a"
        assert device.last_sync is None  # migration 2's columns
    finally:
        await catalog.close()
    assert await catalog_backend.version() == catalog_backend.schema_version


async def test_instances_starting_at_once_migrate_once(catalog_backend: CatalogBackend) -> None:
    if catalog_backend.name == "sqlite":
        # one process migrates an SQLite catalog; others (the CLI) open it after
        await (await catalog_backend.open()).close()
    catalogs = await asyncio.gather(*(catalog_backend.open() for _ in range(4)))
    try:
        await catalogs[0].add_device("gate-01", "yard-a", hash_token("t"), 1.0, actor="test")
        for other in catalogs[1:]:
            assert await other.get_device("gate-01") is not None
    finally:
        await asyncio.gather(*(c.close() for c in catalogs))
    assert await catalog_backend.version() == catalog_backend.schema_version


async def test_sqlite_catalog_is_wal(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    await (await SqliteCatalog.open(path)).close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_newer_schema_is_refused(catalog_backend: CatalogBackend) -> None:
    await (await catalog_backend.open()).close()
    await catalog_backend.set_version(catalog_backend.schema_version + 1)
    with pytest.raises(CatalogVersionError):
        await catalog_backend.open()


async def test_credentials_are_hashed_and_revocable(
    catalog: Catalog, catalog_backend: CatalogBackend
) -> None:
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
    with pytest.raises(Conflict):
        await catalog.add_operator("alice", hash_token("again"), 1.0, actor="test")
    operator = await catalog.principal_for_token(hash_token(op_token))
    assert operator is not None and operator.is_operator
    await catalog.revoke_operator("alice", 3.0, actor="test")
    await catalog.revoke_operator("alice", 4.0, actor="test")  # again: audited, marked
    assert await catalog.principal_for_token(hash_token(op_token)) is None
    with pytest.raises(NotFound):
        await catalog.revoke_operator("bob", 3.0, actor="test")
    actions = [
        (e.action, e.subject, e.detail) for e in await catalog.list_audit(after_id=0, limit=50)
    ]
    assert actions == [
        ("device.add", "gate-01", {"site_id": "yard-a"}),
        ("device.revoke", "gate-01", {}),
        ("operator.add", "alice", {}),
        ("operator.revoke", "alice", {}),
        ("operator.revoke", "alice", {"already_revoked": True}),
    ]
    stored = await catalog_backend.stored_text()
    assert hash_token(token).encode() in stored  # the dump does read the credentials
    assert token.encode() not in stored and op_token.encode() not in stored


async def test_rotation_replaces_the_token(catalog: Catalog) -> None:
    await catalog.add_device("gate-01", "yard-a", hash_token("one"), 1.0, actor="test")
    await catalog.rotate_device_token("gate-01", hash_token("two"), 2.0, actor="ops")
    assert await catalog.principal_for_token(hash_token("one")) is None
    assert await catalog.principal_for_token(hash_token("two")) is not None
    with pytest.raises(NotFound):
        await catalog.rotate_device_token("gate-09", hash_token("x"), 2.0, actor="ops")
    await catalog.revoke_device("gate-01", 3.0, actor="ops")
    with pytest.raises(Conflict):
        await catalog.rotate_device_token("gate-01", hash_token("three"), 4.0, actor="ops")
    await catalog.add_device("gate-02", "yard-a", hash_token("four"), 1.0, actor="test")
    devices = await catalog.list_devices()
    assert [(d.device_id, d.revoked) for d in devices] == [("gate-01", True), ("gate-02", False)]
    await catalog.record_sync("gate-02", {"depth": {"events": 3}}, 5.0)
    synced = await catalog.get_device("gate-02")
    assert synced is not None and (synced.last_sync_at, synced.last_sync) == (
        5.0,
        {"depth": {"events": 3}},
    )


async def test_record_batch_is_first_writer_wins_and_raises_watermark(catalog: Catalog) -> None:
    await catalog.add_device("gate-01", "yard-a", hash_token("t"), 1.0, actor="test")
    first = _batch()
    assert await catalog.record_batch(first) is first
    held = await catalog.record_batch(replace(first, sha256="bb" * 32))
    assert held == first
    await catalog.record_batch(_batch("gate-01.events.30-40", last=40, first=30))
    await catalog.record_batch(_batch("gate-01.events.11-20", last=20, first=11))
    assert await catalog.watermarks("gate-01") == {Stream.EVENTS: 40}
    assert await catalog.get_batch("gate-01.events.11-20") is not None
    assert await catalog.get_batch("gate-01.events.99-100") is None
    assert await catalog.held_ranges("gate-01", Stream.EVENTS, 10, 10) == [(11, 20), (30, 40)]
    assert await catalog.held_ranges("gate-01", Stream.EVENTS, 10, 1) == [(11, 20)]
    assert await catalog.overlapping_batch("gate-01", Stream.EVENTS, 15, 25) == (
        "gate-01.events.11-20"
    )
    assert await catalog.overlapping_batch("gate-01", Stream.EVENTS, 21, 29) is None
    assert await catalog.overlapping_batch("gate-01", Stream.TELEMETRY, 1, 100) is None


async def test_raw_requests_move_once_and_expire(catalog: Catalog) -> None:
    await catalog.add_device("gate-01", "yard-a", hash_token("t"), 1.0, actor="test")
    for n, at in (("r1", 1.0), ("r2", 1.0), ("r3", 2.0)):
        await catalog.add_raw_request(_raw(n, created_at=at))
    with pytest.raises(Conflict):
        await catalog.add_raw_request(_raw("r1"))
    listed = await catalog.list_raw_requests(device_id=None, state=None, limit=10)
    assert [r.request_id for r in listed] == ["r1", "r2", "r3"]  # created_at, then insertion
    assert listed[0] == _raw("r1")
    pending = await catalog.pending_raw_requests("gate-01", now=50.0)
    assert [r.request_id for r in pending] == ["r1", "r2", "r3"]
    moved = await catalog.set_raw_request_state("gate-01", ["r1", "r9"], "unavailable", 60.0)
    assert moved == 1
    assert await catalog.set_raw_request_state("gate-02", ["r2"], "unavailable", 60.0) == 0
    assert await catalog.set_raw_request_state("gate-01", ["r1"], "delivered", 61.0) == 0
    assert await catalog.expire_raw_requests(101.5) == 1  # r2 (r3 expires at 102)
    states = {
        r.request_id: r.state
        for r in await catalog.list_raw_requests(device_id="gate-01", state=None, limit=10)
    }
    assert states == {"r1": "unavailable", "r2": "expired", "r3": "requested"}
    only = await catalog.list_raw_requests(device_id=None, state="requested", limit=10)
    assert [r.request_id for r in only] == ["r3"]
    one = await catalog.get_raw_request("r1")
    assert one is not None and one.state_changed_at == 60.0
    assert await catalog.get_raw_request("nope") is None


async def test_an_upload_is_recorded_once_with_its_blob_and_request(catalog: Catalog) -> None:
    await catalog.add_device("gate-01", "yard-a", hash_token("t"), 1.0, actor="test")
    await catalog.add_raw_request(_raw("r1"))
    upload = UploadRecord("u1", "gate-01", 5, "cc" * 32, 3.0, {"request_id": "r1"})
    assert await catalog.record_upload(upload, actor="device:gate-01") is True
    assert await catalog.record_upload(upload, actor="device:gate-01") is False
    assert await catalog.has_blob("cc" * 32)
    assert not await catalog.has_blob("dd" * 32)
    assert await catalog.device_uploaded_blob("gate-01", "cc" * 32)
    assert not await catalog.device_uploaded_blob("gate-02", "cc" * 32)
    delivered = await catalog.get_raw_request("r1")
    assert delivered is not None and (delivered.state, delivered.upload_id) == ("delivered", "u1")
    events = await catalog.list_audit(after_id=0, limit=10)
    assert [e.action for e in events] == ["device.add", "raw_request.create", "upload.complete"]
    assert events[-1].detail["raw_request_delivered"] is True
    assert [e.action for e in await catalog.list_audit(after_id=events[0].event_id, limit=1)] == [
        "raw_request.create"
    ]
    await catalog.record_audit(4.0, "alice", "device.list", "*", {"count": 1})
    last = await catalog.list_audit(after_id=events[-1].event_id, limit=10)
    assert [(e.actor, e.action, e.at) for e in last] == [("alice", "device.list", 4.0)]


async def test_instances_writing_at_once_store_each_thing_once(
    catalog_backend: CatalogBackend,
) -> None:
    """Three catalogs on one store (three instances) get the same batch, the same upload
    completion and the same device at once: each is stored once, and every instance
    answers with the one record that was stored."""
    await (await catalog_backend.open()).close()  # migrated first (SQLite: one process does)
    instances = await asyncio.gather(*(catalog_backend.open() for _ in range(3)))
    try:
        await instances[0].add_device("gate-01", "yard-a", hash_token("t"), 1.0, actor="test")
        await instances[0].add_raw_request(_raw("r1"))
        versions = [replace(_batch(), sha256=f"{n:02x}" * 32) for n in range(6)]
        stored = await asyncio.gather(
            *(instances[n % 3].record_batch(b) for n, b in enumerate(versions))
        )
        assert len({s.sha256 for s in stored}) == 1  # one content won, everyone sees it
        assert sum(s is versions[n] for n, s in enumerate(stored)) == 1

        upload = UploadRecord("u1", "gate-01", 5, "cc" * 32, 3.0, {"request_id": "r1"})
        recorded = await asyncio.gather(
            *(instances[n % 3].record_upload(upload, actor="device:gate-01") for n in range(6))
        )
        assert sorted(recorded) == [False] * 5 + [True]

        async def add(n: int) -> bool:
            try:
                await instances[n % 3].add_device(
                    "gate-02", "yard-b", hash_token(f"t{n}"), 2.0, actor="test"
                )
            except Conflict:
                return False
            return True

        assert sorted(await asyncio.gather(*(add(n) for n in range(6)))) == [False] * 5 + [True]
        events = await instances[1].list_audit(after_id=0, limit=50)
        actions = [e.action for e in events]
        assert actions.count("upload.complete") == 1 and actions.count("device.add") == 2
        assert [e.event_id for e in events] == sorted(e.event_id for e in events)
        assert await instances[2].watermarks("gate-01") == {Stream.EVENTS: 10}
    finally:
        await asyncio.gather(*(c.close() for c in instances))
