"""POST /v1/sync: watermarks, pending raw requests, and state reported by the device."""

from __future__ import annotations

from typing import Any

from sync.protocol import Stream, SyncResponse
from tests.support.ingest import PARQUET, Ingest, bearer, events_batch


def _sync_body(**extra: Any) -> dict[str, Any]:
    return {"device_id": "gate-01", "site_id": "yard-a"} | extra


async def test_handshake_returns_acked_watermarks_and_policy(ingest: Ingest) -> None:
    token = await ingest.device()
    first = await ingest.client.post("/v1/sync", json=_sync_body(), headers=bearer(token))
    assert first.status == 200
    answer = SyncResponse.model_validate(await first.json())
    assert answer.acked == {}
    assert answer.raw_requests == []
    assert answer.models == []
    assert answer.server_time == ingest.clock.now
    batch_id, body = events_batch(first=5, last=42)
    put = await ingest.client.put(
        f"/v1/batches/{batch_id}", data=body, headers=bearer(token) | PARQUET
    )
    assert put.status == 201
    status = {
        "watermarks": {"events": 99},
        "outbox": {"events": {"records": 57, "bytes": 9000}},
        "models": [{"name": "ppocr", "version": "4.0"}],
        "link": {"rtt_ms": 80},
    }
    second = await ingest.client.post("/v1/sync", json=_sync_body(**status), headers=bearer(token))
    assert SyncResponse.model_validate(await second.json()).acked == {"events": 42}
    operator = await ingest.operator()
    devices = await (await ingest.client.get("/v1/admin/devices", headers=bearer(operator))).json()
    (device,) = devices["devices"]
    assert device["acked"] == {"events": 42}
    assert device["last_sync"]["outbox"]["events"]["records"] == 57
    assert device["last_sync_at"] == ingest.clock.now


async def test_handshake_lists_the_batches_held_above_the_watermark_when_asked(
    ingest: Ingest,
) -> None:
    """The watermark is the highest seq held, not a prefix: asked, the cloud lists the
    batches it holds above the device's watermark, so a gap below one shows."""
    token = await ingest.device()
    for first, last in [(5, 42), (60, 80), (120, 130)]:  # nothing held of 43-59, 81-119
        batch_id, body = events_batch(first=first, last=last)
        put = await ingest.client.put(
            f"/v1/batches/{batch_id}", data=body, headers=bearer(token) | PARQUET
        )
        assert put.status == 201

    async def handshake(**extra: Any) -> SyncResponse:
        answer = await ingest.client.post(
            "/v1/sync", json=_sync_body(**extra), headers=bearer(token)
        )
        assert answer.status == 200
        return SyncResponse.model_validate(await answer.json())

    assert (await handshake()).held is None  # an older device does not ask
    asked = await handshake(want_held=True, watermarks={"events": 42})
    assert asked.acked == {"events": 130}
    assert asked.held is not None
    assert asked.held[Stream.EVENTS] == [(60, 80), (120, 130)]
    assert asked.held[Stream.CRITICAL] == asked.held[Stream.TELEMETRY] == []
    everything = await handshake(want_held=True)
    assert everything.held is not None
    assert everything.held[Stream.EVENTS] == [(5, 42), (60, 80), (120, 130)]


async def test_handshake_rejects_bad_bodies(ingest: Ingest) -> None:
    token = await ingest.device()
    cases = [
        (b"{", "application/json", 400),
        (b'{"device_id": "gate-01"}', "application/json", 400),
        (b'{"device_id": "gate-01", "site_id": "yard-a", "surprise": 1}', "application/json", 400),
        (b'{"device_id": "gate-01", "site_id": "yard-a", "protocol": 2}', "application/json", 400),
        (b'{"device_id": "gate-01", "site_id": "yard-b"}', "application/json", 403),
        (b"device_id=gate-01", "application/x-www-form-urlencoded", 415),
    ]
    for body, content_type, status in cases:
        response = await ingest.client.post(
            "/v1/sync", data=body, headers=bearer(token) | {"Content-Type": content_type}
        )
        assert response.status == status, body
        assert set(await response.json()) == {"error", "detail"}


async def test_raw_request_reaches_the_device_and_its_answers_update_state(ingest: Ingest) -> None:
    token = await ingest.device()
    await ingest.device("gate-02")
    operator = await ingest.operator()
    created = []
    for body in [
        {"device_id": "gate-01", "seq": 17, "reason": "label this"},
        {"device_id": "gate-01", "since": 1.7e9, "until": 1.7e9 + 60},
        {"device_id": "gate-02", "seq": 3},
    ]:
        response = await ingest.client.post("/v1/raw-requests", json=body, headers=bearer(operator))
        assert response.status == 201
        created.append(await response.json())
    by_seq, by_range, other = created
    answer = SyncResponse.model_validate(
        await (
            await ingest.client.post("/v1/sync", json=_sync_body(), headers=bearer(token))
        ).json()
    )
    assert [r.request_id for r in answer.raw_requests] == [
        by_seq["request_id"],
        by_range["request_id"],
    ]
    assert answer.raw_requests[0].seq == 17
    assert (answer.raw_requests[1].since, answer.raw_requests[1].until) == (1.7e9, 1.7e9 + 60)
    report = _sync_body(
        delivered_raw_requests=[by_seq["request_id"], other["request_id"]],
        unknown_raw_requests=[by_range["request_id"], "rr-never-made"],
    )
    after = SyncResponse.model_validate(
        await (await ingest.client.post("/v1/sync", json=report, headers=bearer(token))).json()
    )
    assert after.raw_requests == []
    states = await (await ingest.client.get("/v1/raw-requests", headers=bearer(operator))).json()
    by_id = {r["request_id"]: r["state"] for r in states["raw_requests"]}
    assert by_id == {
        by_seq["request_id"]: "delivered",
        by_range["request_id"]: "unavailable",
        other["request_id"]: "requested",
    }  # a device cannot settle another's
