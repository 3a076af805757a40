"""``GET /healthz`` (open), ``GET /metrics`` and ``GET /v1/openapi.json`` (authenticated).

``build_metrics_app`` is the scrape-only listener: ``/metrics`` without a token,
served on its own port bound to loopback (``metrics_port``), so Prometheus
needs no operator token (which would let it change devices and read the audit log).
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cloud_ingest.app_keys import METRICS
from cloud_ingest.metrics import IngestMetrics
from cloud_ingest.openapi import openapi_document
from cloud_ingest.principal import principal_of, require_operator

__all__ = ["add_service_routes", "build_metrics_app"]


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


def build_metrics_app(metrics: IngestMetrics) -> web.Application:
    """An app answering only ``GET /metrics`` (no token) from the service's registry."""
    app = web.Application()

    async def scrape(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(metrics.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app.router.add_get("/metrics", scrape)
    return app
