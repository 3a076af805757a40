"""The local API (aiohttp) for cameras and technicians, on localhost or a unix socket.

Every route except none needs ``Authorization: Bearer <technician_token>``
when a token is configured.  Errors are JSON ``{"error": code, "message": ...}``
with a 4xx status; a bad request never stops the daemon.

* ``POST /v1/frames?camera=<id>`` (or header ``X-Camera-Id``): JPEG/PNG body,
  optional JSON object in ``X-Frame-Metadata`` (flat, only the keys in
  ``[local_api] frame_metadata_keys``; it rides with the frame's events);
  202 with the queue depth.
* ``GET /v1/status``: per-task rates and latency vs SLA, outbox depth per
  class, models loaded/failed, disk, dropped frames.
* ``GET /v1/events``: server-sent events, one per durable task result.
* ``GET /metrics``: Prometheus text from the daemon's own registry.

A request aiohttp cannot even parse (unknown method, oversized header, bad
Content-Length) never reaches a handler; :class:`ApiRunner` answers it with the
same JSON error body instead of aiohttp's plain text.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Protocol

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from appliance.errors import BadFrame, BadFrameMetadata
from appliance.sources.frame_metadata import MetadataValue, parse_frame_metadata
from sync.shared.json_error_runner import JsonErrorRunner

__all__ = ["ApiBackend", "ApiRunner", "build_app"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiBackend(Protocol):
    """What the API needs from the daemon."""

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
    ) -> int: ...

    def status(self) -> dict[str, Any]: ...

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]: ...

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None: ...


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def build_app(
    backend: ApiBackend,
    *,
    token: str | None,
    max_frame_bytes: int,
    frame_metadata_keys: Collection[str],
) -> web.Application:
    metadata_keys = frozenset(frame_metadata_keys)

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is not None:
            given = request.headers.get("Authorization", "")
            if not given.startswith("Bearer "):
                return _error(
                    401, "unauthorized", "missing bearer token (Authorization: Bearer ...)"
                )
            if not hmac.compare_digest(given[7:].encode(), token.encode()):
                return _error(403, "forbidden", "wrong technician token")
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "frame_too_large", f"body larger than {max_frame_bytes} bytes")
        except web.HTTPException as exc:
            if exc.status >= 400:
                return _error(exc.status, "http_error", exc.reason)
            raise
        except RequestPayloadError as exc:  # e.g. Content-Encoding: gzip on a plain body
            detail = str(exc).strip().splitlines()[-1].strip()  # not "400, message:"
            response = _error(400, "bad_body", f"cannot read the request body: {detail}")
            response.force_close()  # the rest of the body cannot be read either
            return response

    async def post_frame(request: web.Request) -> web.Response:
        camera = request.query.get("camera") or request.headers.get("X-Camera-Id")
        if not camera:
            return _error(400, "camera_missing", "name the camera: ?camera=<id> or X-Camera-Id")
        if camera not in backend.camera_ids:
            return _error(404, "unknown_camera", f"camera {camera!r} is not configured")
        if not backend.accepting:
            return _error(503, "shutting_down", "the appliance is stopping; retry shortly")
        if request.content_length is not None and request.content_length > max_frame_bytes:
            return _error(
                413,
                "frame_too_large",
                f"body of {request.content_length} bytes, limit {max_frame_bytes}",
            )
        raw_metadata = request.headers.get("X-Frame-Metadata")
        try:
            metadata = parse_frame_metadata(raw_metadata, metadata_keys) if raw_metadata else {}
        except BadFrameMetadata as exc:
            return _error(400, "bad_metadata", str(exc))
        data = await request.read()
        try:
            depth = await backend.submit_frame(
                camera, data, request.headers.get("Content-Type"), metadata
            )
        except BadFrame as exc:
            status = 413 if "too large" in str(exc) else 415 if "content type" in str(exc) else 400
            return _error(status, "bad_frame", str(exc))
        return web.json_response(
            {"accepted": True, "camera": camera, "queue_depth": depth}, status=202
        )

    async def get_status(request: web.Request) -> web.Response:
        return web.json_response(backend.status())

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
                    event = await asyncio.wait_for(queue.get(), timeout=15.0)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                await response.write(f"event: result\ndata: {json.dumps(event)}\n\n".encode())
        except ConnectionResetError:
            pass
        finally:
            backend.unsubscribe(queue)
        return response

    app = web.Application(middlewares=[auth], client_max_size=max_frame_bytes)
    app.router.add_post("/v1/frames", post_frame)
    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/v1/events", get_events)
    app.router.add_get("/metrics", get_metrics)
    return app


def _bad_http_request(status: int, detail: str) -> web.Response:
    return _error(status, "bad_http_request", detail)


class ApiRunner(JsonErrorRunner):
    """``web.AppRunner`` whose connections answer even unparseable requests with JSON."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, error_body=_bad_http_request, **kwargs)
