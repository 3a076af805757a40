"""Raw on demand: creation, validation, expiry, delivery through a completed upload."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field

from cloud_ingest.app_keys import CATALOG
from cloud_ingest.completions import make_on_complete
from cloud_ingest.settings import IngestSettings
from tests.support.ingest import Ingest, bearer, running_ingest


@dataclass(frozen=True)
class FinishedUpload:
    """The fields cloud_ingest.tus.CompletedUpload hands to on_complete."""

    upload_id: str
    device_id: str
    length: int
    sha256: str | None
    metadata: dict[str, str] = field(default_factory=dict)


async def test_invalid_raw_requests_are_400_or_404(ingest: Ingest) -> None:
    operator = await ingest.operator()
    await ingest.device()
    cases = [
        ({"device_id": "gate-01"}, 400),
        ({"device_id": "gate-01", "seq": 1, "since": 1.0, "until": 2.0}, 400),
        ({"device_id": "gate-01", "since": 5.0}, 400),
        ({"device_id": "gate-01", "since": 5.0, "until": 5.0}, 400),
        ({"device_id": "gate-01", "seq": -1}, 400),
        ({"device_id": "gate-01", "seq": 1, "ttl_s": 0}, 400),
        ({"device_id": "../etc", "seq": 1}, 400),
        ({"device_id": "gate-99", "seq": 1}, 404),
    ]
    for body, status in cases:
        response = await ingest.client.post("/v1/raw-requests", json=body, headers=bearer(operator))
        assert response.status == status, body
    assert (
        await ingest.client.get("/v1/raw-requests?state=lost", headers=bearer(operator))
    ).status == 400
    assert (
        await ingest.client.get("/v1/raw-requests?limit=0", headers=bearer(operator))
    ).status == 400
    assert (
        await ingest.client.get("/v1/raw-requests/rr-nope", headers=bearer(operator))
    ).status == 404


async def test_raw_request_expires_after_its_ttl(ingest: Ingest) -> None:
    operator = await ingest.operator()
    token = await ingest.device()
    response = await ingest.client.post(
        "/v1/raw-requests",
        json={"device_id": "gate-01", "seq": 9, "ttl_s": 60},
        headers=bearer(operator),
    )
    request_id = (await response.json())["request_id"]
    ingest.clock.now += 61
    sync = await ingest.client.post(
        "/v1/sync", json={"device_id": "gate-01", "site_id": "yard-a"}, headers=bearer(token)
    )
    assert (await sync.json())["raw_requests"] == []
    listed = await ingest.client.get("/v1/raw-requests?state=expired", headers=bearer(operator))
    assert [r["request_id"] for r in (await listed.json())["raw_requests"]] == [request_id]


async def test_completed_upload_delivers_the_raw_request_and_is_audited(ingest: Ingest) -> None:
    operator = await ingest.operator()
    await ingest.device()
    created = await (
        await ingest.client.post(
            "/v1/raw-requests", json={"device_id": "gate-01", "seq": 9}, headers=bearer(operator)
        )
    ).json()
    on_complete = make_on_complete(ingest.app)
    sha = "ab" * 32
    await on_complete(
        FinishedUpload(
            "up-1",
            "gate-01",
            1234,
            sha,
            {"stream": "raw_requested", "sha256": sha, "request_id": created["request_id"]},
        )
    )
    one = await (
        await ingest.client.get(
            f"/v1/raw-requests/{created['request_id']}", headers=bearer(operator)
        )
    ).json()
    assert (one["state"], one["upload_id"]) == ("delivered", "up-1")
    assert await ingest.app[CATALOG].has_blob(sha)
    audit = await (await ingest.client.get("/v1/admin/audit", headers=bearer(operator))).json()
    actions = [e["action"] for e in audit["events"]]
    assert actions[-2:] == ["raw_request.create", "upload.complete"]
    assert audit["events"][-1]["detail"]["raw_request_delivered"] is True


async def test_upload_from_another_device_does_not_deliver(ingest: Ingest) -> None:
    operator = await ingest.operator()
    await ingest.device("gate-01")
    created = await (
        await ingest.client.post(
            "/v1/raw-requests", json={"device_id": "gate-01", "seq": 9}, headers=bearer(operator)
        )
    ).json()
    await make_on_complete(ingest.app)(
        FinishedUpload("up-2", "gate-02", 10, None, {"request_id": created["request_id"]})
    )
    one = await ingest.app[CATALOG].get_raw_request(created["request_id"])
    assert one is not None and one.state == "requested"


async def test_completion_re_run_after_a_crash_is_recorded_and_audited_once(
    settings: IngestSettings,
) -> None:
    """Killed after on_complete's writes but before 'notified' was saved: the HEAD that
    re-runs it must not write a second upload.complete (that said nothing was delivered)."""
    blob = b"raw frame bytes"
    sha = hashlib.sha256(blob).hexdigest()
    async with running_ingest(settings) as ingest:
        operator, device = await ingest.operator(), await ingest.device()
        asked = await ingest.client.post(
            "/v1/raw-requests", json={"device_id": "gate-01", "seq": 9}, headers=bearer(operator)
        )
        request_id = (await asked.json())["request_id"]
        meta = ",".join(
            f"{k} {base64.b64encode(v.encode()).decode()}"
            for k, v in {"sha256": sha, "stream": "raw_requested", "request_id": request_id}.items()
        )
        tus = {**bearer(device), "Tus-Resumable": "1.0.0"}
        created = await ingest.client.post(
            "/v1/uploads",
            data=blob,
            headers={
                **tus,
                "Upload-Length": str(len(blob)),
                "Upload-Metadata": meta,
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert created.status == 201
        location = created.headers["Location"]
    info_path = settings.uploads_dir / f"{location.rsplit('/', 1)[1]}.info"
    info = json.loads(info_path.read_text())
    assert info["completed"] and info["notified"]
    info_path.write_text(json.dumps({**info, "notified": False}))  # the save a kill -9 lost
    async with running_ingest(settings) as ingest:
        head = await ingest.client.head(location, headers=tus)
        assert (head.status, head.headers["Upload-Offset"]) == (200, str(len(blob)))
        assert json.loads(info_path.read_text())["notified"]
        audit = await (await ingest.client.get("/v1/admin/audit", headers=bearer(operator))).json()
        completions = [e for e in audit["events"] if e["action"] == "upload.complete"]
        assert [e["detail"]["raw_request_delivered"] for e in completions] == [True]
        record = await ingest.app[CATALOG].get_raw_request(request_id)
        assert record is not None and record.state == "delivered"
