"""A small real tus server for the tus tests: test-only bearer auth, the
service's own error middleware, the tus routes, real loopback sockets."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from cloud_ingest.blobs import BlobStore
from cloud_ingest.middleware import error_middleware
from cloud_ingest.principal import PRINCIPAL, Principal
from cloud_ingest.tus import CompletedUpload, UploadStore, add_tus_routes
from cloud_ingest.tus.chunk_guard import ChunkGuard, MarkerGuard, XattrGuard
from tests.support.clock import FakeClock

TOKENS = {
    "tok-a": Principal(role="device", name="dev-a", device_id="dev-a", site_id="s"),
    "tok-b": Principal(role="device", name="dev-b", device_id="dev-b", site_id="s"),
    "tok-op": Principal(role="operator", name="alice"),
}
TUS = {"Tus-Resumable": "1.0.0"}
OCTET = "application/offset+octet-stream"


@web.middleware
async def bearer_auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if token in TOKENS:
        request[PRINCIPAL] = TOKENS[token]
    return await handler(request)


@dataclass
class TusServer:
    server: TestServer
    store: UploadStore
    blobs: BlobStore
    clock: FakeClock
    completed: list[CompletedUpload] = field(default_factory=list)

    def url(self, path: str = "/v1/uploads/") -> str:
        return str(self.server.make_url(path))


def auth(token: str = "tok-a", **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **TUS, **extra}


def metadata_header(meta: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items())


def checksum_header(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


GUARDS: dict[str, type[MarkerGuard] | type[XattrGuard]] = {
    "xattr": XattrGuard,
    "marker": MarkerGuard,
}


def build_tus_app(
    root: Path,
    clock: FakeClock,
    *,
    max_size: int = 1 << 30,
    port: int | None = None,
    guard: str | None = None,
) -> tuple[web.Application, UploadStore, BlobStore, list[CompletedUpload]]:
    """The tus app; ``guard`` forces a chunk guard ("xattr", "marker"), default: chosen."""
    app = web.Application(middlewares=[error_middleware, bearer_auth])
    chunk_guard: ChunkGuard | None = None if guard is None else GUARDS[guard](root / "uploads")
    store = UploadStore(
        root / "uploads", max_size=max_size, expire_after_s=3600, clock=clock, guard=chunk_guard
    )
    blobs = BlobStore(root / "blobs")
    completed: list[CompletedUpload] = []

    async def on_complete(upload: CompletedUpload) -> None:
        completed.append(upload)

    add_tus_routes(app, store, blobs, on_complete)
    return app, store, blobs, completed


async def start_tus(root: Path, clock: FakeClock, **kw: Any) -> AsyncIterator[TusServer]:
    app, store, blobs, completed = build_tus_app(root, clock, **kw)
    server = TestServer(app)
    await server.start_server()
    try:
        yield TusServer(server, store, blobs, clock, completed)
    finally:
        await server.close()


async def create(
    session: aiohttp.ClientSession, tus: TusServer, length: int, **headers: str
) -> str:
    async with session.post(
        tus.url(), headers=auth(**{"Upload-Length": str(length), **headers})
    ) as r:
        assert r.status == 201, await r.text()
        return str(tus.server.make_url(r.headers["Location"]))
