"""Raw on demand: operators ask for raw frames; devices receive the asks at handshake.

Lifecycle of a request::

    requested --(tus upload with its request_id completes, or device reports it)--> delivered
    requested --(device reports it cannot serve it: frame evicted or never kept)--> unavailable
    requested --(expires_at passes)--> expired

Operators: ``POST /v1/raw-requests`` (by device + seq, or device + time range),
``GET /v1/raw-requests[?device_id=&state=&limit=]``, ``GET /v1/raw-requests/{id}``.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from cloud_ingest.api_models import RawRequestCreate, RawRequestList, RawRequestView
from cloud_ingest.app_keys import CATALOG, CLOCK, SETTINGS
from cloud_ingest.catalog import RAW_REQUEST_STATES, RawRequestRecord, RawRequestState
from cloud_ingest.errors import BadRequest, Conflict, NotFound
from cloud_ingest.json_bodies import read_model
from cloud_ingest.principal import require_operator
from cloud_ingest.query_params import int_param

__all__ = ["add_raw_request_routes"]


def add_raw_request_routes(app: web.Application) -> None:
    app.router.add_post("/v1/raw-requests", create_raw_request)
    app.router.add_get("/v1/raw-requests", list_raw_requests)
    app.router.add_get("/v1/raw-requests/{request_id}", get_raw_request)


async def create_raw_request(request: web.Request) -> web.Response:
    operator = require_operator(request)
    body = await read_model(request, RawRequestCreate)
    app = request.app
    catalog, now = app[CATALOG], app[CLOCK]()
    device = await catalog.get_device(body.device_id)
    if device is None:
        raise NotFound(f"no device {body.device_id!r}")
    if device.revoked:
        raise Conflict(f"device {body.device_id!r} is revoked")
    record = RawRequestRecord(
        request_id=f"rr-{uuid.uuid4().hex}",
        device_id=body.device_id,
        created_by=operator.name,
        created_at=now,
        expires_at=now + (body.ttl_s or app[SETTINGS].raw_request_ttl_s),
        seq=body.seq,
        since=body.since,
        until=body.until,
        reason=body.reason,
    )
    await catalog.add_raw_request(record)  # and its raw_request.create audit event, at once
    return web.json_response(RawRequestView.of(record).model_dump(mode="json"), status=201)


async def list_raw_requests(request: web.Request) -> web.Response:
    require_operator(request)
    state = request.query.get("state")
    if state is not None and state not in RAW_REQUEST_STATES:
        raise BadRequest(f"state must be one of {', '.join(RAW_REQUEST_STATES)}")
    catalog = request.app[CATALOG]
    await catalog.expire_raw_requests(request.app[CLOCK]())
    records = await catalog.list_raw_requests(
        device_id=request.query.get("device_id"),
        state=_state(state),
        limit=int_param(request, "limit", 1000, low=1, high=10_000),
    )
    answer = RawRequestList(raw_requests=[RawRequestView.of(r) for r in records])
    return web.json_response(answer.model_dump(mode="json"))


async def get_raw_request(request: web.Request) -> web.Response:
    require_operator(request)
    catalog = request.app[CATALOG]
    await catalog.expire_raw_requests(request.app[CLOCK]())
    record = await catalog.get_raw_request(request.match_info["request_id"])
    if record is None:
        raise NotFound("no such raw request")
    return web.json_response(RawRequestView.of(record).model_dump(mode="json"))


def _state(value: str | None) -> RawRequestState | None:
    for state in RAW_REQUEST_STATES:
        if state == value:
            return state
    return None
