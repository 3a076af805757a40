"""Error and metrics middlewares, and a runner whose low-level errors are JSON too.

Every answer of the service that is not a success is ``{"error", "detail"}``
JSON (``sync.protocol.ErrorBody``):

* :class:`cloud_ingest.errors.IngestError` -> its status, slug, detail, headers;
* aiohttp ``HTTPException`` (404 from the router, 405, 413 from a too large
  body, ...) -> its status with a slug of its reason;
* anything else -> logged with its traceback, answered 500 without one;
* a request aiohttp cannot even parse (bad request line, bad header bytes)
  never reaches a middleware: :class:`IngestAppRunner` (a
  ``sync.shared.json_error_runner.JsonErrorRunner``) answers it with JSON as well.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.web_protocol import RequestPayloadError

from cloud_ingest.app_keys import METRICS, SETTINGS
from cloud_ingest.connection_guard import ConnectionGuard, GuardedRequestHandler
from cloud_ingest.errors import BadContentEncoding, BadRequest, IngestError
from sync.protocol import API_PREFIX, TUS_VERSION
from sync.shared.json_error_runner import JsonErrorRunner

__all__ = ["IngestAppRunner", "error_body", "error_middleware", "metrics_middleware"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_TUS_PREFIX = f"{API_PREFIX}/uploads"
_MAX_DETAIL = 500


def error_body(status: int, error: str, detail: str) -> web.Response:
    return web.json_response({"error": error, "detail": detail[:_MAX_DETAIL]}, status=status)


def _slug(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def _with_protocol_headers(request: web.Request, response: web.Response) -> web.Response:
    # tus demands Tus-Resumable on every response of the upload endpoints,
    # including the errors raised before the tus handlers run (auth, 404).
    if request.path.startswith(_TUS_PREFIX):
        response.headers.setdefault("Tus-Resumable", TUS_VERSION)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except IngestError as exc:
        if exc.status >= 500:
            log.error(  # noqa: TRY400 - a typed error, no traceback to show
                "ingest error %s: %s", exc.error, exc.detail, extra={"path": request.path}
            )
        response = error_body(exc.status, exc.error, exc.detail)
        response.headers.update(exc.headers)
        return _with_protocol_headers(request, response)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.text if exc.text and exc.content_type == "text/plain" else exc.reason
        response = error_body(exc.status, _slug(exc.status), detail or exc.reason)
        for name, value in exc.headers.items():
            if name.lower() not in {"content-type", "content-length"}:
                response.headers[name] = value
        return _with_protocol_headers(request, response)
    except RequestPayloadError as exc:
        # A body aiohttp could not decode: a broken gzip/deflate stream (the cause is a
        # ContentEncodingError) or broken chunked framing. The client's fault: 400, one line.
        bad_encoding = isinstance(exc.__cause__, ContentEncodingError)
        error = BadContentEncoding if bad_encoding else BadRequest
        what = "Content-Encoding" if bad_encoding else "body framing"
        log.info("bad request body on %s %s: %s", request.method, request.path, what)
        response = error_body(400, error.error, f"the request body does not decode ({what})")
        response.force_close()  # the rest of the stream cannot be trusted
        return _with_protocol_headers(request, response)
    except ConnectionError as exc:
        # The client went away mid-request (a cut link, a cancelled PUT): routine for
        # edge devices, so one line, not aiohttp's error-level traceback. The answer
        # is never delivered; 499 ("client closed request", as nginx logs it) is for
        # the access log and the metrics.
        log.info(
            "client went away during %s %s: %s",
            request.method,
            request.path,
            exc,
            extra={"path": request.path},
        )
        return error_body(499, "client_closed_request", "the client closed the connection")
    except Exception:
        log.exception("unexpected error", extra={"path": request.path, "method": request.method})
        response = error_body(500, "internal_error", "unexpected server error; see server logs")
        return _with_protocol_headers(request, response)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except IngestError as exc:
        status = exc.status
        raise
    finally:
        metrics.requests.labels(request.method, route, str(status)).inc()
        metrics.request_seconds.labels(route).observe(time.perf_counter() - started)


def _bad_http_request(status: int, detail: str) -> web.Response:
    return error_body(status, _slug(status), detail)


class IngestAppRunner(JsonErrorRunner):
    """``web.AppRunner`` whose connections answer even unparseable requests with JSON and
    keep to the connection limits of the app's settings (``connection_guard.py``)."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        settings = app[SETTINGS]
        guard = ConnectionGuard(
            header_timeout_s=settings.header_timeout_s,
            body_stall_timeout_s=settings.body_stall_timeout_s,
            max_connections_per_address=settings.max_connections_per_address,
        )
        super().__init__(
            app,
            error_body=_bad_http_request,
            handler_class=GuardedRequestHandler,
            guard=guard,
            **kwargs,
        )
