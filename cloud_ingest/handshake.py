"""``POST /v1/sync``: the handshake a device starts every time its link comes up.

The device says what it holds (watermarks, outbox depth, models, link stats)
and which raw requests it delivered or cannot serve; the cloud answers with
what it already holds (acked watermark per metadata stream), the raw requests
still pending for the device, the sampling policy and the model assignment
(from the rollouts, cloud_ingest/models/rollouts.py; the outcomes the device
reports are recorded first).  The device then sends only what is missing.
"""

from __future__ import annotations

from aiohttp import web

from cloud_ingest.app_keys import CATALOG, CLOCK, METRICS, SETTINGS
from cloud_ingest.catalog import RawRequestRecord
from cloud_ingest.errors import BadRequest, Forbidden
from cloud_ingest.json_bodies import read_model
from cloud_ingest.models.routes import MODELS
from cloud_ingest.principal import require_device
from sync.protocol import (
    HELD_RANGES_MAX,
    METADATA_STREAMS,
    PROTOCOL_VERSION,
    RawRequest,
    SyncRequest,
    SyncResponse,
)

__all__ = ["add_handshake_routes", "to_wire"]


def add_handshake_routes(app: web.Application) -> None:
    app.router.add_post("/v1/sync", post_sync)


def to_wire(record: RawRequestRecord) -> RawRequest:
    return RawRequest(
        request_id=record.request_id,
        seq=record.seq,
        since=record.since,
        until=record.until,
        expires_at=record.expires_at,
    )


async def post_sync(request: web.Request) -> web.Response:
    principal = require_device(request)
    body = await read_model(request, SyncRequest)
    if body.protocol != PROTOCOL_VERSION:
        raise BadRequest(f"protocol {body.protocol} is not supported (this server: v1)")
    if body.device_id != principal.device_id:
        raise Forbidden(f"token belongs to device {principal.device_id!r}, not {body.device_id!r}")
    if body.site_id != principal.site_id:
        raise Forbidden(f"device {body.device_id!r} is registered at site {principal.site_id!r}")
    app = request.app
    catalog, now = app[CATALOG], app[CLOCK]()
    device_id = principal.device_id
    assert device_id is not None  # require_device guarantees it
    if body.delivered_raw_requests:
        await catalog.set_raw_request_state(
            device_id, body.delivered_raw_requests, "delivered", now
        )
    if body.unknown_raw_requests:
        await catalog.set_raw_request_state(
            device_id, body.unknown_raw_requests, "unavailable", now
        )
    await catalog.record_sync(
        device_id,
        body.model_dump(
            mode="json", include={"watermarks", "outbox", "models", "link"}, exclude_none=True
        ),
        now,
    )
    pending = await catalog.pending_raw_requests(device_id, now)
    held = None
    if body.want_held:
        held = {
            stream: await catalog.held_ranges(
                device_id, stream, body.watermarks.get(stream, 0), HELD_RANGES_MAX
            )
            for stream in METADATA_STREAMS
        }
    answer = SyncResponse(
        held=held,
        acked=await catalog.watermarks(device_id),
        raw_requests=[to_wire(r) for r in pending],
        sampling=app[SETTINGS].sampling,
        models=await app[MODELS].rollouts.handshake(device_id, principal.site_id, body.models, now),
        server_time=now,
    )
    app[METRICS].handshakes.inc()
    return web.json_response(answer.model_dump(mode="json"))
