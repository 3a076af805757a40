"""An aiohttp ``AppRunner`` that answers even unparseable requests with a JSON error.

A request aiohttp cannot parse (an unknown method, an oversized header, a bad
Content-Length) never reaches a handler or a middleware: aiohttp answers it
itself, in plain text.  Both of our servers - the appliance's local API and the
cloud ingest service - promise a JSON error body on every 4xx, so both run
their apps under :class:`JsonErrorRunner`, each with its own body shape.

A request the client got wrong (bad framing, an oversized header, a body whose
gzip does not decode) is the client's fault, not the server's: it is logged as
one warning line, at most ``_WARNINGS_PER_MINUTE`` a minute (then one line
saying how many were left out), never as aiohttp's error-level traceback, so
an unauthenticated peer cannot flood the log.  Server faults keep their traceback.

It lives in ``sync.shared`` because that is the one package both servers may
import (see the import-linter contracts in pyproject.toml).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

__all__ = ["ClientFaultLog", "ErrorBody", "JsonErrorRequestHandler", "JsonErrorRunner"]

ErrorBody = Callable[[int, str], web.Response]
"""Builds a server's JSON error response from a status and a one-line detail."""

_MAX_DETAIL = 200
_WARNINGS_PER_MINUTE = 10
_log = logging.getLogger(__name__)


class ClientFaultLog:
    """One warning line per bad request, at most ``per_minute`` a minute (a fixed window;
    the first line of the next window says how many were left out)."""

    def __init__(
        self, per_minute: int = _WARNINGS_PER_MINUTE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._window_start = float("-inf")
        self._logged = 0
        self.suppressed = 0

    def warn(self, message: str, *args: object) -> None:
        now = self.clock()
        if now - self._window_start >= 60.0:
            if self.suppressed:
                _log.warning("%d more bad requests in the last minute, not logged", self.suppressed)
            self._window_start, self._logged, self.suppressed = now, 0, 0
        if self._logged >= self.per_minute:
            self.suppressed += 1
            return
        self._logged += 1
        _log.warning(message, *args)


CLIENT_FAULTS = ClientFaultLog()


def _client_fault(exc: BaseException | None) -> bool:
    return isinstance(exc, HttpProcessingError | RequestPayloadError)


def _detail(status: int, message: str | None) -> str:
    """What went wrong in one line of at most 200 characters (aiohttp quotes the bytes)."""
    if status >= 500 or not message or not message.strip():
        return HTTPStatus(status).phrase
    return message.strip().splitlines()[0][:_MAX_DETAIL]


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler with JSON error bodies and one-line client faults."""

    def __init__(self, *args: Any, error_body: ErrorBody, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._error_body = error_body

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status < 500:
            CLIENT_FAULTS.warn(
                "bad request from %s: %s %s", request.remote, status, _detail(status, message)
            )
            if request.writer.output_size > 0:  # as aiohttp: a reply began, the stream is lost
                raise ConnectionError("a response was already sent; cannot send an error")
        else:
            super().handle_error(request, status, exc, message)  # logs; raises if a reply began
        response = self._error_body(status, _detail(status, message))
        response.force_close()  # the rest of the stream cannot be trusted
        return response

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if _client_fault(exc if isinstance(exc, BaseException) else None):
            # e.g. the rest of a body whose gzip broke, read after the answer went out
            CLIENT_FAULTS.warn("bad request body: %s", str(exc).strip().splitlines()[-1][:200])
            return
        super().log_exception(*args, **kwargs)


class _JsonErrorServer(Server):
    error_body: ErrorBody
    handler_class: type[JsonErrorRequestHandler]

    def __call__(self) -> RequestHandler:
        kwargs: dict[str, Any] = self._kwargs
        return self.handler_class(self, loop=self._loop, error_body=self.error_body, **kwargs)


class JsonErrorRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer unparseable requests with ``error_body``."""

    def __init__(
        self,
        app: web.Application,
        *,
        error_body: ErrorBody,
        handler_class: type[JsonErrorRequestHandler] = JsonErrorRequestHandler,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._error_body = error_body
        self._handler_class = handler_class

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer
        assert isinstance(server, _JsonErrorServer)
        server.error_body = self._error_body
        server.handler_class = self._handler_class
        return server
