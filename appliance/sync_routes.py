"""Local API controls of the sync engine (only mounted when ``sync.cloud_url`` is set).

* ``POST /v1/sync/pause`` / ``POST /v1/sync/resume``: stop / restart sending.
* ``POST /v1/sync/now``: handshake now, send young batches, skip the backoff.
* ``PUT /v1/sync/bandwidth`` with ``{"bps": <number> | null}``: global upload cap.
* ``GET /v1/sync``: the engine's progress (also embedded in ``/v1/status``).
"""

from __future__ import annotations

import json

from aiohttp import web

from sync.engine import SyncEngine

__all__ = ["add_sync_routes"]


def add_sync_routes(app: web.Application, engine: SyncEngine) -> None:
    def progress() -> web.Response:
        return web.json_response(engine.progress().model_dump(mode="json"))

    async def pause(request: web.Request) -> web.Response:
        engine.pause()
        return progress()

    async def resume(request: web.Request) -> web.Response:
        engine.resume()
        return progress()

    async def now(request: web.Request) -> web.Response:
        engine.sync_now()
        return progress()

    async def get(request: web.Request) -> web.Response:
        return progress()

    async def bandwidth(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
            bps = body["bps"]
        except (ValueError, KeyError, TypeError):
            return web.json_response(
                {"error": "bad_request", "message": 'send {"bps": <bytes per second> or null}'},
                status=400,
            )
        valid_number = isinstance(bps, int | float) and not isinstance(bps, bool) and bps > 0
        if bps is not None and not valid_number:
            return web.json_response(
                {"error": "bad_request", "message": "bps must be a positive number or null"},
                status=400,
            )
        engine.set_bandwidth_cap(None if bps is None else float(bps))
        return progress()

    app.router.add_post("/v1/sync/pause", pause)
    app.router.add_post("/v1/sync/resume", resume)
    app.router.add_post("/v1/sync/now", now)
    app.router.add_put("/v1/sync/bandwidth", bandwidth)
    app.router.add_get("/v1/sync", get)
