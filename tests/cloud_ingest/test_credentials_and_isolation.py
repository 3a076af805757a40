"""Credentials an operator can take back, blobs a device cannot probe, private files.

Issue 22 items 8-10: HEAD /v1/blobs answers only for the device's own uploads;
operators can be revoked, device tokens rotated (the old one refused at once)
and devices listed (audited); catalog.db is 0600 and the data directories 0700.
"""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

from tests.cloud_ingest.tus_fixtures import metadata_header
from tests.support.ingest import Ingest, bearer

TUS = {"Tus-Resumable": "1.0.0"}


async def _upload(ingest: Ingest, token: str, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    headers = (
        bearer(token)
        | TUS
        | {
            "Upload-Length": str(len(data)),
            "Upload-Metadata": metadata_header({"sha256": digest}),
            "Content-Type": "application/offset+octet-stream",
        }
    )
    created = await ingest.client.post("/v1/uploads/", data=data, headers=headers)
    assert created.status == 201, await created.text()
    return digest


async def _blob_status(ingest: Ingest, token: str, digest: str) -> int:
    return (await ingest.client.head(f"/v1/blobs/{digest}", headers=bearer(token))).status


async def test_a_device_learns_only_of_its_own_blobs(ingest: Ingest) -> None:
    yard_a = await ingest.device("gate-01", "yard-a")
    yard_b = await ingest.device("gate-02", "yard-b")
    operator = await ingest.operator()
    digest = await _upload(ingest, yard_a, b"frame of yard a" * 1000)
    assert await _blob_status(ingest, yard_a, digest) == 200
    assert await _blob_status(ingest, yard_b, digest) == 404  # as if absent
    assert await _blob_status(ingest, operator, digest) == 200
    # the other device may still send it (stored once), and then it is its own
    assert await _upload(ingest, yard_b, b"frame of yard a" * 1000) == digest
    assert await _blob_status(ingest, yard_b, digest) == 200


async def test_rotating_a_device_token_refuses_the_old_one_at_once(ingest: Ingest) -> None:
    old = await ingest.device()
    operator = await ingest.operator()
    rotated = await ingest.client.post("/v1/admin/devices/gate-01/rotate", headers=bearer(operator))
    assert rotated.status == 200
    new = (await rotated.json())["token"]
    assert new != old and new.startswith("yld_")
    body = {"device_id": "gate-01", "site_id": "yard-a"}
    assert (await ingest.client.post("/v1/sync", json=body, headers=bearer(old))).status == 401
    assert (await ingest.client.post("/v1/sync", json=body, headers=bearer(new))).status == 200
    unknown = await ingest.client.post("/v1/admin/devices/nope/rotate", headers=bearer(operator))
    assert unknown.status == 404
    audit = await (await ingest.client.get("/v1/admin/audit", headers=bearer(operator))).json()
    assert [e["action"] for e in audit["events"]][-1] == "device.rotate"


async def test_a_revoked_operator_is_refused_at_once(ingest: Ingest) -> None:
    alice = await ingest.operator("alice")
    bob = await ingest.operator("bob")
    revoked = await ingest.client.post("/v1/admin/operators/bob/revoke", headers=bearer(alice))
    assert revoked.status == 200
    assert await revoked.json() == {"name": "bob", "revoked": True}
    assert (await ingest.client.get("/v1/admin/devices", headers=bearer(bob))).status == 401
    missing = await ingest.client.post("/v1/admin/operators/carol/revoke", headers=bearer(alice))
    assert missing.status == 404


async def test_listing_devices_is_audited(ingest: Ingest) -> None:
    await ingest.device()
    operator = await ingest.operator()
    listed = await ingest.client.get("/v1/admin/devices", headers=bearer(operator))
    assert [d["device_id"] for d in (await listed.json())["devices"]] == ["gate-01"]
    audit = await (await ingest.client.get("/v1/admin/audit", headers=bearer(operator))).json()
    last = audit["events"][-1]
    assert (last["action"], last["actor"], last["detail"]) == (
        "device.list",
        "alice",
        {"devices": 1},
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_catalog_is_0600_and_data_dirs_0700(ingest: Ingest) -> None:
    settings = ingest.settings
    await ingest.device()  # a write, so the WAL exists
    assert _mode(settings.catalog_path) == 0o600
    for sidecar in ("catalog.db-wal", "catalog.db-shm"):
        path = settings.data_dir / sidecar
        if path.exists():
            assert _mode(path) == 0o600, sidecar
    for directory in (
        settings.data_dir,
        settings.lake_dir,
        settings.blobs_dir,
        settings.uploads_dir,
    ):
        assert _mode(directory) == 0o700, directory
