"""``GET /healthz``: is the appliance ready to serve, for the installer's health gate and
for monitoring.  No token and nothing sensitive: readiness and its reason only.

* 200 ``{"status": "ok", "ready": true}`` when the required models are loaded and
  the outbox is open;
* 503 ``{"status": "unavailable", "ready": false, "reason": "model gate_ocr missing:
  /opt/yardlink/models/ch_PP-OCRv4_det_infer.onnx"}`` otherwise.
"""

from __future__ import annotations

from aiohttp import web

from appliance.api import mark_public
from appliance.readiness import Readiness

__all__ = ["add_health_routes"]


def add_health_routes(app: web.Application, readiness: Readiness) -> None:
    async def healthz(request: web.Request) -> web.Response:
        if readiness.ready:
            return web.json_response({"status": "ok", "ready": True})
        return web.json_response(
            {"status": "unavailable", "ready": False, "reason": readiness.reason}, status=503
        )

    app.router.add_get("/healthz", healthz)
    mark_public(app, "/healthz")
