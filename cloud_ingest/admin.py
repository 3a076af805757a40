"""Operator API: devices (list, add, revoke) and the audit log.

``GET  /v1/admin/devices``                    every device with its watermarks and last handshake
``POST /v1/admin/devices``                    register a device; the answer holds its token, once
``POST /v1/admin/devices/{device_id}/revoke`` refuse the device's tokens from now on
``POST /v1/admin/devices/{device_id}/rotate`` a new token, shown once; the old one is refused
``POST /v1/admin/operators/{name}/revoke``    refuse an operator's tokens from now on
``GET  /v1/admin/audit?after=&limit=``        audit events in order
"""

from __future__ import annotations

from aiohttp import web

from cloud_ingest.api_models import (
    AuditEventView,
    AuditList,
    DeviceCreate,
    DeviceView,
    OperatorRevoked,
)
from cloud_ingest.app_keys import CATALOG, CLOCK
from cloud_ingest.json_bodies import read_model
from cloud_ingest.principal import require_operator
from cloud_ingest.provisioning import add_device, revoke_device, revoke_operator, rotate_device
from cloud_ingest.provisioning import list_devices as list_all_devices
from cloud_ingest.query_params import int_param

__all__ = ["add_admin_routes"]


def add_admin_routes(app: web.Application) -> None:
    app.router.add_get("/v1/admin/devices", list_devices)
    app.router.add_post("/v1/admin/devices", create_device)
    app.router.add_post("/v1/admin/devices/{device_id}/revoke", revoke)
    app.router.add_post("/v1/admin/devices/{device_id}/rotate", rotate)
    app.router.add_post("/v1/admin/operators/{name}/revoke", revoke_an_operator)
    app.router.add_get("/v1/admin/audit", list_audit)


async def list_devices(request: web.Request) -> web.Response:
    operator = require_operator(request)
    devices = await list_all_devices(
        request.app[CATALOG], actor=operator.name, now=request.app[CLOCK]()
    )
    return web.json_response(devices.model_dump(mode="json"))


async def rotate(request: web.Request) -> web.Response:
    operator = require_operator(request)
    created = await rotate_device(
        request.app[CATALOG],
        request.match_info["device_id"],
        actor=operator.name,
        now=request.app[CLOCK](),
    )
    return web.json_response(created.model_dump(mode="json"))


async def revoke_an_operator(request: web.Request) -> web.Response:
    operator = require_operator(request)
    name = request.match_info["name"]
    await revoke_operator(request.app[CATALOG], name, actor=operator.name, now=request.app[CLOCK]())
    return web.json_response(OperatorRevoked(name=name, revoked=True).model_dump(mode="json"))


async def create_device(request: web.Request) -> web.Response:
    operator = require_operator(request)
    body = await read_model(request, DeviceCreate)
    created = await add_device(
        request.app[CATALOG],
        body.device_id,
        body.site_id,
        actor=operator.name,
        now=request.app[CLOCK](),
    )
    return web.json_response(created.model_dump(mode="json"), status=201)


async def revoke(request: web.Request) -> web.Response:
    operator = require_operator(request)
    device_id = request.match_info["device_id"]
    catalog = request.app[CATALOG]
    await revoke_device(catalog, device_id, actor=operator.name, now=request.app[CLOCK]())
    device = await catalog.get_device(device_id)
    assert device is not None  # revoke_device raised NotFound otherwise
    view = DeviceView.of(device, await catalog.watermarks(device_id))
    return web.json_response(view.model_dump(mode="json"))


async def list_audit(request: web.Request) -> web.Response:
    require_operator(request)
    after = int_param(request, "after", 0, low=0, high=2**62)
    limit = int_param(request, "limit", 500, low=1, high=10_000)
    events = await request.app[CATALOG].list_audit(after_id=after, limit=limit)
    answer = AuditList(
        events=[AuditEventView.of(e) for e in events],
        next_after=events[-1].event_id if events else after,
    )
    return web.json_response(answer.model_dump(mode="json"))
