"""The auth matrix: who may call what, over real HTTP."""

from __future__ import annotations

import pytest

from cloud_ingest.auth import bearer_token
from cloud_ingest.errors import Unauthorized
from tests.support.ingest import PARQUET, Ingest, bearer, events_batch


async def _error(response: object) -> dict[str, str]:
    body = await response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error", "detail"}
    return body  # type: ignore[no-any-return]


async def test_healthz_is_open(ingest: Ingest) -> None:
    response = await ingest.client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer yld_not-a-real-token"},
        {"Authorization": "Bearer " + "x" * 5000},
    ],
)
async def test_missing_or_bad_token_is_401_json(ingest: Ingest, headers: dict[str, str]) -> None:
    await ingest.device()
    for method, path in [
        ("POST", "/v1/sync"),
        ("GET", "/v1/raw-requests"),
        ("GET", "/metrics"),
        ("PUT", "/v1/batches/gate-01.events.1-2"),
        ("GET", "/nowhere"),
    ]:
        response = await ingest.client.request(method, path, headers=headers)
        assert response.status == 401, (method, path)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await _error(response))["error"] == "unauthorized"


async def test_revoked_device_is_refused_at_once(ingest: Ingest) -> None:
    token = await ingest.device()
    operator = await ingest.operator()
    batch_id, body = events_batch()
    first = await ingest.client.put(
        f"/v1/batches/{batch_id}", data=body, headers=bearer(token) | PARQUET
    )
    assert first.status == 201
    revoked = await ingest.client.post("/v1/admin/devices/gate-01/revoke", headers=bearer(operator))
    assert revoked.status == 200
    assert (await revoked.json())["revoked"] is True
    again = await ingest.client.put(
        f"/v1/batches/{batch_id}", data=body, headers=bearer(token) | PARQUET
    )
    assert again.status == 401


async def test_device_may_not_write_another_devices_batch(ingest: Ingest) -> None:
    token_a = await ingest.device("gate-01")
    await ingest.device("gate-02")
    batch_id, body = events_batch(device_id="gate-02")
    response = await ingest.client.put(
        f"/v1/batches/{batch_id}", data=body, headers=bearer(token_a) | PARQUET
    )
    assert response.status == 403
    assert "another device" in (await _error(response))["detail"]


async def test_device_may_not_handshake_as_another_device(ingest: Ingest) -> None:
    token_a = await ingest.device("gate-01")
    await ingest.device("gate-02")
    response = await ingest.client.post(
        "/v1/sync", json={"device_id": "gate-02", "site_id": "yard-a"}, headers=bearer(token_a)
    )
    assert response.status == 403


async def test_operator_endpoints_refuse_devices_and_accept_operators(ingest: Ingest) -> None:
    device = await ingest.device()
    operator = await ingest.operator()
    for method, path in [
        ("GET", "/v1/raw-requests"),
        ("GET", "/v1/admin/devices"),
        ("GET", "/v1/admin/audit"),
        ("GET", "/metrics"),
        ("POST", "/v1/admin/devices/gate-01/revoke"),
    ]:
        denied = await ingest.client.request(method, path, headers=bearer(device))
        assert denied.status == 403, (method, path)
        assert (await _error(denied))["error"] == "forbidden"
    for path in ["/v1/raw-requests", "/v1/admin/devices", "/v1/admin/audit", "/metrics"]:
        allowed = await ingest.client.get(path, headers=bearer(operator))
        assert allowed.status == 200, path


async def test_operators_may_not_use_device_endpoints(ingest: Ingest) -> None:
    operator = await ingest.operator()
    batch_id, body = events_batch()
    response = await ingest.client.put(
        f"/v1/batches/{batch_id}", data=body, headers=bearer(operator) | PARQUET
    )
    assert response.status == 403


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc ") == "abc"
    for bad in [None, "", "Bearer ", "Token abc", "Bearer \u00e9t\u00e9"]:
        with pytest.raises(Unauthorized):
            bearer_token(bad)
