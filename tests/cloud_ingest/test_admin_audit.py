"""Admin changes and their audit events are one catalog transaction: both or neither.

A failing write is injected in the catalog file itself (an SQLite trigger that
aborts the insert, as a full disk or an I/O error would), so the test does not
depend on how the service splits its statements.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from cloud_ingest.app_keys import CATALOG
from cloud_ingest.credentials import hash_token
from cloud_ingest.provisioning import add_operator
from tests.support.ingest import Ingest, bearer


@contextmanager
def failing_inserts(catalog_path: Path, table: str) -> Iterator[None]:
    """Every INSERT into ``table`` fails (from any connection) while inside."""
    with closing(sqlite3.connect(catalog_path)) as db:
        db.execute(
            f"CREATE TRIGGER fail_{table} BEFORE INSERT ON {table}"
            " BEGIN SELECT RAISE(ABORT, 'injected write failure'); END"
        )
        db.commit()
    try:
        yield
    finally:
        with closing(sqlite3.connect(catalog_path)) as db:
            db.execute(f"DROP TRIGGER fail_{table}")
            db.commit()


async def _audit(ingest: Ingest, operator: str) -> list[tuple[str, str, str]]:
    answer = await ingest.client.get("/v1/admin/audit", headers=bearer(operator))
    assert answer.status == 200
    return [(e["actor"], e["action"], e["subject"]) for e in (await answer.json())["events"]]


async def _admin_changes(ingest: Ingest, operator: str) -> list[int]:
    """Register gate-02, revoke gate-01, ask gate-01 for a raw frame; their statuses."""
    client, auth = ingest.client, bearer(operator)
    added = await client.post(
        "/v1/admin/devices", json={"device_id": "gate-02", "site_id": "yard-b"}, headers=auth
    )
    asked = await client.post(
        "/v1/raw-requests", json={"device_id": "gate-01", "seq": 7}, headers=auth
    )
    revoked = await client.post("/v1/admin/devices/gate-01/revoke", headers=auth)
    return [added.status, asked.status, revoked.status]


async def test_a_failed_audit_write_leaves_no_admin_change_behind(ingest: Ingest) -> None:
    operator = await ingest.operator("alice")
    device_token = await ingest.device("gate-01")
    catalog = ingest.app[CATALOG]

    with failing_inserts(ingest.settings.catalog_path, "audit_log"):
        assert await _admin_changes(ingest, operator) == [500, 500, 500]
        with pytest.raises(sqlite3.Error):  # the CLI's `operator add`
            await add_operator(catalog, "bob", actor="cli", now=ingest.clock())

    # none of the four changes was kept without its audit event
    assert await catalog.get_device("gate-02") is None
    gate_01 = await catalog.get_device("gate-01")
    assert gate_01 is not None and not gate_01.revoked
    sync = await ingest.client.post(
        "/v1/sync", json={"device_id": "gate-01", "site_id": "yard-a"}, headers=bearer(device_token)
    )
    assert sync.status == 200  # the token was not revoked
    assert await catalog.list_raw_requests(device_id=None, state=None, limit=10) == []
    assert await _audit(ingest, operator) == [
        ("test", "operator.add", "alice"),
        ("test", "device.add", "gate-01"),
    ]

    # the same changes now succeed (nothing half-written is in the way: no 409),
    # each with exactly one audit event
    assert await _admin_changes(ingest, operator) == [201, 201, 200]
    bob = await add_operator(catalog, "bob", actor="cli", now=ingest.clock())
    (request,) = await catalog.list_raw_requests(device_id=None, state=None, limit=10)
    assert await _audit(ingest, operator) == [
        ("test", "operator.add", "alice"),
        ("test", "device.add", "gate-01"),
        ("alice", "device.add", "gate-02"),
        ("alice", "raw_request.create", request.request_id),
        ("alice", "device.revoke", "gate-01"),
        ("cli", "operator.add", "bob"),
    ]
    principal = await catalog.principal_for_token(hash_token(bob.token))
    assert principal is not None and principal.name == "bob"


async def test_a_failed_change_writes_no_audit_event(ingest: Ingest) -> None:
    operator = await ingest.operator("alice")
    with failing_inserts(ingest.settings.catalog_path, "credentials"):
        added = await ingest.client.post(
            "/v1/admin/devices",
            json={"device_id": "gate-02", "site_id": "yard-b"},
            headers=bearer(operator),
        )
        assert added.status == 500
    assert await ingest.app[CATALOG].get_device("gate-02") is None
    assert await _audit(ingest, operator) == [("test", "operator.add", "alice")]


async def test_a_repeated_revoke_is_audited_as_one_that_changed_nothing(ingest: Ingest) -> None:
    operator = await ingest.operator("alice")
    await ingest.device("gate-01")
    for _ in range(2):
        revoked = await ingest.client.post(
            "/v1/admin/devices/gate-01/revoke", headers=bearer(operator)
        )
        assert revoked.status == 200
    answer = await ingest.client.get("/v1/admin/audit", headers=bearer(operator))
    events = [e for e in (await answer.json())["events"] if e["action"] == "device.revoke"]
    assert [e["detail"] for e in events] == [{}, {"already_revoked": True}]
