"""An aiohttp ``AppRunner`` that answers even unparseable requests with a JSON error.

A request aiohttp cannot parse (an unknown method, an oversized header, a bad
Content-Length) never reaches a handler or a middleware: aiohttp answers it
itself, in plain text.  Both of our servers - the appliance's local API and the
cloud ingest service - promise a JSON error body on every 4xx, so both run
their apps under :class:`JsonErrorRunner`, each with its own body shape.

It lives in ``sync`` because that is the one package both servers may import
(see the import-linter contracts in pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

__all__ = ["ErrorBody", "JsonErrorRunner"]

ErrorBody = Callable[[int, str], web.Response]
"""Builds a server's JSON error response from a status and a one-line detail."""

_MAX_DETAIL = 200


def _detail(status: int, message: str | None) -> str:
    """What went wrong in one line of at most 200 characters (aiohttp quotes the bytes)."""
    if status >= 500 or not message or not message.strip():
        return HTTPStatus(status).phrase
    return message.strip().splitlines()[0][:_MAX_DETAIL]


class _JsonErrorRequestHandler(RequestHandler):
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
        super().handle_error(request, status, exc, message)  # logs; raises if a reply began
        response = self._error_body(status, _detail(status, message))
        response.force_close()  # the rest of the stream cannot be trusted
        return response


class _JsonErrorServer(Server):
    error_body: ErrorBody

    def __call__(self) -> RequestHandler:
        kwargs: dict[str, Any] = self._kwargs
        return _JsonErrorRequestHandler(self, loop=self._loop, error_body=self.error_body, **kwargs)


class JsonErrorRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer unparseable requests with ``error_body``."""

    def __init__(self, app: web.Application, *, error_body: ErrorBody, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._error_body = error_body

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer
        assert isinstance(server, _JsonErrorServer)
        server.error_body = self._error_body
        return server
