"""``GET /healthz`` (open), ``GET /metrics`` and ``GET /v1/openapi.json`` (authenticated)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cloud_ingest.app_keys import METRICS
from cloud_ingest.openapi import openapi_document
from cloud_ingest.principal import principal_of, require_operator

__all__ = ["add_service_routes"]


def add_service_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/openapi.json", openapi)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    require_operator(request)
    body = generate_latest(request.app[METRICS].registry)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def openapi(request: web.Request) -> web.Response:
    principal_of(request)  # any authenticated caller may read the contract
    return web.json_response(openapi_document())
