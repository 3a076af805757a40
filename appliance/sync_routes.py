"""Local API controls of the sync engine (only mounted when ``sync.cloud_url`` is set).

* ``POST /v1/sync/pause`` / ``POST /v1/sync/resume``: stop / restart sending.
* ``POST /v1/sync/now``: handshake now, send young batches, skip the backoff.
* ``PUT /v1/sync/bandwidth`` with ``{"bps": <number> | null}``: global upload cap in
  bits per second (a finite number >= 1; null lifts the cap); any other body is a 400.
* ``GET /v1/sync``: the engine's progress (also embedded in ``/v1/status``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

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
        problem = _bandwidth_problem(await request.read())
        if isinstance(problem, str):
            return web.json_response({"error": "bad_request", "message": problem}, status=400)
        engine.set_bandwidth_cap(problem.bps)
        return progress()

    app.router.add_post("/v1/sync/pause", pause)
    app.router.add_post("/v1/sync/resume", resume)
    app.router.add_post("/v1/sync/now", now)
    app.router.add_put("/v1/sync/bandwidth", bandwidth)
    app.router.add_get("/v1/sync", get)


_BANDWIDTH_SHAPE = 'send {"bps": <bits per second> or null}'


@dataclass(frozen=True, slots=True)
class _Cap:
    bps: float | None


def _bandwidth_problem(raw: bytes) -> _Cap | str:
    """The cap a ``PUT /v1/sync/bandwidth`` body asks for, or what is wrong with it."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return f"the body is not JSON: {_BANDWIDTH_SHAPE}"
    if not isinstance(body, dict) or "bps" not in body:
        return _BANDWIDTH_SHAPE
    unknown = sorted(set(body) - {"bps"})
    if unknown:
        return f"unknown field(s) {', '.join(map(repr, unknown))}: {_BANDWIDTH_SHAPE}"
    bps = body["bps"]
    if bps is None:
        return _Cap(None)
    wrong = "bps must be a finite number of bits per second >= 1, or null"
    if isinstance(bps, bool) or not isinstance(bps, int | float):
        return f"{wrong} (got {type(bps).__name__})"
    try:
        value = float(bps)
    except OverflowError:
        return f"{wrong} (got a number too large)"
    if not math.isfinite(value) or value < 1:
        return f"{wrong} (got {value})"
    return _Cap(value)
