"""Service-level behaviour: JSON errors everywhere, metrics, OpenAPI, admin devices."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from cloud_ingest.openapi import openapi_document
from cloud_ingest.settings import IngestSettings
from tests.raw_http import raw_exchange
from tests.support.ingest import PARQUET, Ingest, bearer, events_batch, running_ingest


async def _raw_http(ingest: Ingest, payload: bytes) -> tuple[int, bytes]:
    server = ingest.client.server
    status, _, body = await raw_exchange(str(server.host), int(server.port or 0), payload)
    return status, body


async def test_unparseable_requests_are_answered_with_json(ingest: Ingest) -> None:
    for payload in [
        b"GARBAGE\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\x01: y\r\n\r\n",
        b"PUT /v1/batches/a HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ]:
        status, body = await _raw_http(ingest, payload)
        assert 400 <= status < 500, payload[:40]
        assert body.startswith(b'{"error": "'), body[:200]
        assert b"Traceback" not in body


async def test_unexpected_exception_is_500_json_without_traceback(ingest: Ingest) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    other_settings = ingest.settings.model_copy(
        update={"data_dir": ingest.settings.data_dir / "other"}
    )
    add_route = lambda app: app.router.add_get("/v1/broken", broken)  # noqa: E731
    async with running_ingest(other_settings, add_route) as other:
        token = await other.operator()
        response = await other.client.get("/v1/broken", headers=bearer(token))
        assert response.status == 500
        body = await response.json()
        assert body["error"] == "internal_error"
        assert "secret" not in body["detail"]


async def test_unknown_route_and_method_are_json(ingest: Ingest) -> None:
    token = await ingest.device()
    missing = await ingest.client.get("/v1/nothing-here", headers=bearer(token))
    assert missing.status == 404
    assert (await missing.json())["error"] == "not_found"
    wrong = await ingest.client.delete("/v1/sync", headers=bearer(token))
    assert wrong.status == 405
    assert (await wrong.json())["error"] == "method_not_allowed"


async def test_metrics_count_batches_and_requests(ingest: Ingest) -> None:
    token = await ingest.device()
    operator = await ingest.operator()
    batch_id, body = events_batch(first=1, last=10)
    for _ in range(2):
        await ingest.client.put(
            f"/v1/batches/{batch_id}", data=body, headers=bearer(token) | PARQUET
        )
    text = await (await ingest.client.get("/metrics", headers=bearer(operator))).text()
    assert 'yardlink_ingest_batches_total{outcome="stored",stream="events"} 1.0' in text
    assert 'yardlink_ingest_batches_total{outcome="duplicate",stream="events"} 1.0' in text
    assert 'yardlink_ingest_records_total{stream="events"} 10.0' in text


async def test_openapi_covers_every_route(ingest: Ingest) -> None:
    token = await ingest.device()
    response = await ingest.client.get("/v1/openapi.json", headers=bearer(token))
    document = await response.json()
    assert document["openapi"].startswith("3.1")
    assert document == openapi_document()
    for resource in ingest.app.router.resources():
        path = resource.canonical
        methods = {route.method.lower() for route in resource if route.method != "HEAD"}
        assert path in document["paths"], path
        assert methods <= set(document["paths"][path]), path
    assert "SyncRequest" in document["components"]["schemas"]


async def test_admin_adds_lists_and_revokes_devices(ingest: Ingest) -> None:
    operator = await ingest.operator()
    created = await ingest.client.post(
        "/v1/admin/devices",
        json={"device_id": "gate-07", "site_id": "yard-z"},
        headers=bearer(operator),
    )
    assert created.status == 201
    token = (await created.json())["token"]
    sync = await ingest.client.post(
        "/v1/sync", json={"device_id": "gate-07", "site_id": "yard-z"}, headers=bearer(token)
    )
    assert sync.status == 200
    again = await ingest.client.post(
        "/v1/admin/devices",
        json={"device_id": "gate-07", "site_id": "yard-z"},
        headers=bearer(operator),
    )
    assert again.status == 409
    missing = await ingest.client.post("/v1/admin/devices/nope/revoke", headers=bearer(operator))
    assert missing.status == 404
    listed = await (await ingest.client.get("/v1/admin/devices", headers=bearer(operator))).json()
    assert [d["device_id"] for d in listed["devices"]] == ["gate-07"]
    audit = await (
        await ingest.client.get("/v1/admin/audit?after=0&limit=1", headers=bearer(operator))
    ).json()
    assert len(audit["events"]) == 1
    assert audit["next_after"] == audit["events"][0]["event_id"]


async def test_upload_limit_from_settings_is_enforced(tmp_path: Path) -> None:
    """``max_upload_bytes`` reaches the tus store: a larger Upload-Length is 413 at creation."""
    settings = IngestSettings(data_dir=tmp_path / "data", max_upload_bytes=1000)
    async with running_ingest(settings) as ingest:
        token = await ingest.device()
        headers = {**bearer(token), "Tus-Resumable": "1.0.0"}
        too_big = await ingest.client.post(
            "/v1/uploads/", headers={**headers, "Upload-Length": "1001"}
        )
        assert too_big.status == 413
        fits = await ingest.client.post(
            "/v1/uploads/", headers={**headers, "Upload-Length": "1000"}
        )
        assert fits.status == 201
