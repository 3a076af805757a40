"""A tiny aiohttp stand-in for the local API that serves a RECORDED ``/v1/status``.

Used only by the snapshot tests, which need the same screen every run; every
other TUI test runs against a real daemon (tests/appliance/daemon_harness.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

RECORDED = Path(__file__).with_name("recorded_status.json")
RECORDED_MODELS = Path(__file__).with_name("recorded_models.json")  # a /v1/models body


def recorded_status() -> dict[str, Any]:
    status: dict[str, Any] = json.loads(RECORDED.read_text())
    return status


def recorded_models() -> dict[str, Any]:
    models: dict[str, Any] = json.loads(RECORDED_MODELS.read_text())
    return models


@asynccontextmanager
async def serving_status(
    status: dict[str, Any], models: dict[str, Any] | None = None
) -> AsyncIterator[str]:
    """Serve ``status`` at ``/v1/status`` (and ``models`` at ``/v1/models``: else a 404,
    model updates off) on a loopback port; yields the base URL."""

    async def get_status(request: web.Request) -> web.Response:
        return web.json_response(status)

    async def get_models(request: web.Request) -> web.Response:
        return web.json_response(models)

    app = web.Application()
    app.router.add_get("/v1/status", get_status)
    if models is not None:
        app.router.add_get("/v1/models", get_models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
