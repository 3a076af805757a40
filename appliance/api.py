"""The local API (aiohttp) for cameras and technicians, on localhost or a unix socket.

Every route needs ``Authorization: Bearer <technician_token>`` when a token is
configured, except those marked public (``mark_public``: ``GET /healthz``).
Errors are JSON ``{"error": code, "detail": text}`` with a 4xx/5xx status, as the
cloud's are: a typed ``ApplianceError`` a request caused (``BadFrame``,
``FrameTooLarge``, ``UnsupportedFrameType``, ``ShuttingDown``...) carries its
status and code, and one middleware answers with them; a bad request never stops
the daemon.  The routes themselves live in route modules listed in
``appliance.api_server.API_ROUTES``; this module holds the app, its middleware and
the core routes:

* ``POST /v1/frames?camera=<id>`` (or header ``X-Camera-Id``): JPEG/PNG body,
  optional JSON object in ``X-Frame-Metadata`` (flat, only the keys in
  ``[local_api] frame_metadata_keys``; it rides with the frame's events);
  201 with ``id`` (its spool file name) once the frame is written to the spool and
  fsync'd (``push_mode = "durable"``, the default), or 202 with the queue depth when
  the site chose ``push_mode = "queued"`` (in memory only: a kill loses it).
* ``GET /v1/status``: ``appliance.status.ApplianceStatus``: per-task rates and
  latency vs SLA, outbox depth per class, models loaded/failed, disk, readiness.
* ``GET /v1/events``: server-sent events, one per durable task result.
* ``GET /metrics``: Prometheus text from the daemon's own registry.

A request aiohttp cannot even parse (unknown method, oversized header, bad
Content-Length) never reaches a handler; :class:`ApiRunner` answers it with the
same JSON error body instead of aiohttp's plain text.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Protocol

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import SecretStr

from appliance.errors import ApplianceError, FrameTooLarge, ShuttingDown
from appliance.local_auth import AuthVerdict, check_technician
from appliance.sources.frame_metadata import MetadataValue, parse_frame_metadata
from appliance.sources.push_spool import PushAnswer
from appliance.status import ApplianceStatus
from sync.shared.json_error_runner import JsonErrorRunner

__all__ = [
    "ApiBackend",
    "ApiRunner",
    "add_core_routes",
    "create_app",
    "error_response",
    "mark_public",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_PUBLIC_PATHS = web.AppKey("public_paths", set[str])
SSE_KEEPALIVE_S = 15.0


class ApiBackend(Protocol):
    """What the core routes need from the daemon."""

    camera_ids: set[str]
    registry: CollectorRegistry

    @property
    def accepting(self) -> bool: ...

    async def submit_frame(
        self,
        camera_id: str,
        data: bytes,
        content_type: str | None,
        metadata: dict[str, MetadataValue],
    ) -> PushAnswer: ...

    def status_model(self) -> ApplianceStatus: ...

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]: ...

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None: ...


def error_response(status: int, code: str, detail: str) -> web.Response:
    """The one error body of the local API: ``{"error": code, "detail": text}``."""
    return web.json_response({"error": code, "detail": detail}, status=status)


def mark_public(app: web.Application, path: str) -> None:
    """Serve ``path`` without the technician token (nothing sensitive behind it)."""
    app[_PUBLIC_PATHS].add(path)


def create_app(*, token: SecretStr | None, max_frame_bytes: int) -> web.Application:
    """The app with its middleware (token, typed errors as JSON) and no route yet."""

    @web.middleware
    async def auth_and_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in request.app[_PUBLIC_PATHS]:
            verdict = check_technician(request.headers.get("Authorization"), token)
            if verdict is AuthVerdict.MISSING:
                response = error_response(
                    401, "unauthorized", "missing bearer token (Authorization: Bearer ...)"
                )
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
            if verdict is AuthVerdict.WRONG:
                return error_response(403, "forbidden", "wrong technician token")
        try:
            return await handler(request)
        except ApplianceError as exc:
            if exc.http_status is None:
                raise  # not an answer to the request: aiohttp logs it and answers 500
            return error_response(exc.http_status, exc.code, str(exc))
        except web.HTTPRequestEntityTooLarge:
            return error_response(
                413, FrameTooLarge.code, f"body larger than {max_frame_bytes} bytes"
            )
        except web.HTTPException as exc:
            if exc.status >= 400:
                return error_response(exc.status, "http_error", exc.reason)
            raise
        except RequestPayloadError as exc:  # e.g. Content-Encoding: gzip on a plain body
            detail = str(exc).strip().splitlines()[-1].strip()  # not "400, message:"
            response = error_response(400, "bad_body", f"cannot read the request body: {detail}")
            response.force_close()  # the rest of the body cannot be read either
            return response

    app = web.Application(middlewares=[auth_and_errors], client_max_size=max_frame_bytes)
    app[_PUBLIC_PATHS] = set()
    return app


def add_core_routes(
    app: web.Application,
    backend: ApiBackend,
    *,
    max_frame_bytes: int,
    frame_metadata_keys: Collection[str],
) -> None:
    """Frames in, status, events and metrics out."""
    metadata_keys = frozenset(frame_metadata_keys)

    async def post_frame(request: web.Request) -> web.Response:
        camera = request.query.get("camera") or request.headers.get("X-Camera-Id")
        if not camera:
            return error_response(
                400, "camera_missing", "name the camera: ?camera=<id> or X-Camera-Id"
            )
        if camera not in backend.camera_ids:
            return error_response(404, "unknown_camera", f"camera {camera!r} is not configured")
        if not backend.accepting:
            raise ShuttingDown("the appliance is stopping; retry shortly")
        if request.content_length is not None and request.content_length > max_frame_bytes:
            raise FrameTooLarge(f"body of {request.content_length} bytes, limit {max_frame_bytes}")
        raw_metadata = request.headers.get("X-Frame-Metadata")
        metadata = parse_frame_metadata(raw_metadata, metadata_keys) if raw_metadata else {}
        data = await request.read()
        answer = await backend.submit_frame(
            camera, data, request.headers.get("Content-Type"), metadata
        )
        return web.json_response(answer.body, status=answer.status)

    async def get_status(request: web.Request) -> web.Response:
        return web.json_response(backend.status_model().model_dump(mode="json"))

    async def get_metrics(request: web.Request) -> web.Response:
        body = generate_latest(backend.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        queue = backend.subscribe()
        try:
            await response.write(b": connected\n\n")
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=SSE_KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                await response.write(f"event: result\ndata: {json.dumps(event)}\n\n".encode())
        except ConnectionResetError:
            pass
        finally:
            backend.unsubscribe(queue)
        return response

    app.router.add_post("/v1/frames", post_frame)
    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/v1/events", get_events)
    app.router.add_get("/metrics", get_metrics)


def _bad_http_request(status: int, detail: str) -> web.Response:
    return error_response(status, "bad_http_request", detail)


class ApiRunner(JsonErrorRunner):
    """``web.AppRunner`` whose connections answer even unparseable requests with JSON."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, error_body=_bad_http_request, **kwargs)
