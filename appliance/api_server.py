"""The local API server: every route module in one list, and the runner that serves it.

A new route goes in its own module with an ``add_..._routes(app, ...)`` function
(like ``appliance.sync_routes``), plus one entry in ``API_ROUTES`` that takes what
it needs from the daemon.  A route without the technician token calls
``appliance.api.mark_public``; errors are raised as typed ``ApplianceError``s (or
answered with ``appliance.api.error_response``) so every body is
``{"error": code, "detail": text}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from appliance.api import ApiRunner, add_core_routes, create_app
from appliance.health_routes import add_health_routes
from appliance.openapi import add_openapi_routes
from appliance.sync_routes import add_daemon_technician_routes, add_sync_routes
from appliance.updates.routes import add_model_routes

if TYPE_CHECKING:
    from appliance.daemon import Daemon

__all__ = ["API_ROUTES", "ApiServer", "RouteModule"]

RouteModule = Callable[[web.Application, "Daemon"], None]

SHUTDOWN_TIMEOUT_S = 1.0  # open requests (an SSE stream) get this long at stop


def _core_routes(app: web.Application, daemon: Daemon) -> None:
    api = daemon.config.local_api
    add_core_routes(
        app,
        daemon,
        max_frame_bytes=api.max_frame_bytes,
        frame_metadata_keys=api.frame_metadata_keys,
    )


def _health_routes(app: web.Application, daemon: Daemon) -> None:
    add_health_routes(app, daemon.readiness)


def _sync_routes(app: web.Application, daemon: Daemon) -> None:
    if daemon.sync_engine is not None:  # only when the cloud is configured
        add_sync_routes(app, daemon.sync_engine)


def _model_routes(app: web.Application, daemon: Daemon) -> None:
    if daemon.updates is not None:  # only when [updates] names a release keyring
        add_model_routes(app, daemon.updates)


def _openapi_routes(app: web.Application, daemon: Daemon) -> None:
    api = daemon.config.local_api
    add_openapi_routes(app, cameras=daemon.camera_ids, metadata_keys=api.frame_metadata_keys)


API_ROUTES: tuple[RouteModule, ...] = (
    _core_routes,  # POST /v1/frames, GET /v1/status, /v1/events, /metrics
    _health_routes,  # GET /healthz (public)
    _sync_routes,  # /v1/sync, /v1/sync/{pause,resume,now,bandwidth}
    add_daemon_technician_routes,  # GET /v1/audit, POST /v1/support-bundle
    _model_routes,  # GET /v1/models, POST /v1/models/install, /v1/models/{task}/rollback
    _openapi_routes,  # GET /v1/openapi.json (the routes above, as mounted)
)


class ApiServer:
    """Serves the routes of ``API_ROUTES`` on TCP or a unix socket."""

    def __init__(self, routes: tuple[RouteModule, ...] = API_ROUTES) -> None:
        self._routes = routes
        self._runner: ApiRunner | None = None
        self.url = ""  # http://host:port or unix:/path, once it listens

    async def start(self, daemon: Daemon) -> str:
        api = daemon.config.local_api
        app = create_app(token=api.technician_token, max_frame_bytes=api.max_frame_bytes)
        for add_routes in self._routes:
            add_routes(app, daemon)
        self._runner = ApiRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await self._runner.setup()
        site: web.BaseSite
        if api.unix_socket:
            site = web.UnixSite(self._runner, api.unix_socket)
        else:
            site = web.TCPSite(self._runner, api.host, api.port)
        await site.start()
        if api.unix_socket:
            self.url = f"unix:{api.unix_socket}"
        else:
            host, port = self._runner.addresses[0][:2]
            self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        """Stop listening and close open requests; safe before or after a failed start."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
