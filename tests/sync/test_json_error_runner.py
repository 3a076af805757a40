"""JsonErrorRunner: what aiohttp cannot parse is answered with the server's own JSON body."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from sync.shared.json_error_runner import JsonErrorRunner
from tests.raw_http import raw_exchange


async def _ok(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def _teapot_body(status: int, detail: str) -> web.Response:
    return web.json_response({"kind": "ours", "status": status, "why": detail}, status=status)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: nine\r\n\r\n", 400),
    ],
    ids=["unknown-method", "header-too-long", "bad-content-length"],
)
async def test_unparseable_requests_get_the_servers_json_body(
    request_bytes: bytes, status: int
) -> None:
    app = web.Application()
    app.router.add_get("/", _ok)
    runner = JsonErrorRunner(app, error_body=_teapot_body)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        got, head, body = await raw_exchange(host, port, request_bytes)
        assert got == status, head
        answer = json.loads(body)
        assert answer["kind"] == "ours" and answer["status"] == status
        assert answer["why"] and "\n" not in answer["why"] and len(answer["why"]) <= 200
        ok, _, body = await raw_exchange(
            host, port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert ok == 200  # the server goes on
    finally:
        await runner.cleanup()
