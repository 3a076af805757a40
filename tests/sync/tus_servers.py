"""tus servers our client is tested against, all real and on loopback.

* ``aiohttp-tus``: an independent tus 1.0.0 server (core + creation; it ignores
  creation-with-upload bodies and checksums) - proves our client interoperates.
* ``ingest``: the project's own ingest service (``cloud_ingest.tus``).

``stored_blob`` reads what the ingest service's blob store holds.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp_tus import setup_tus

from tests.sync.ingest_server import blob_file, running_ingest

__all__ = [
    "serve_on_loopback",
    "TUS_SERVERS",
    "TusTarget",
    "mount_third_party_tus",
    "stored_blob",
    "tus_target",
]


TUS_SERVERS = ["aiohttp-tus", "ingest"]


@dataclass
class _Held:
    root: Path
    by_sha: dict[str, Path] = field(default_factory=dict)


def mount_third_party_tus(app: web.Application, root: Path) -> None:
    """Serve ``/v1/uploads/`` with aiohttp-tus and ``HEAD /v1/blobs/{sha256}`` from ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    held = _Held(root)

    async def upload_done(_request: web.Request, _resource: object, path: Path) -> None:
        held.by_sha[hashlib.sha256(path.read_bytes()).hexdigest()] = path

    async def head_blob(request: web.Request) -> web.Response:
        return web.Response(status=200 if request.match_info["sha256"] in held.by_sha else 404)

    app.router.add_route("HEAD", "/v1/blobs/{sha256}", head_blob)
    with warnings.catch_warnings():  # aiohttp-tus predates web.AppKey
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        setup_tus(app, upload_path=root, upload_url="/v1/uploads/", on_upload_done=upload_done)


@dataclass
class TusTarget:
    """A running tus server: where to send, with which token, and what it stored."""

    kind: str
    url: str
    port: int
    token: str
    root: Path
    requests: list[tuple[float, str, str]]

    def stored(self, sha256: str) -> bytes | None:
        if self.kind == "ingest":
            return stored_blob(self.root, sha256)
        for path in self.root.glob("*"):
            if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256:
                return path.read_bytes()
        return None


@asynccontextmanager
async def tus_target(kind: str, tmp_path: Path) -> AsyncIterator[TusTarget]:
    if kind == "ingest":
        async with running_ingest(tmp_path / "cloud") as cloud:
            yield TusTarget(
                kind, cloud.url, cloud.port, cloud.token, cloud.settings.data_dir, cloud.requests
            )
        return
    seen: list[tuple[float, str, str]] = []

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        seen.append((time.monotonic(), request.method, request.path))
        return await handler(request)

    app = web.Application(middlewares=[record])
    mount_third_party_tus(app, tmp_path / "tus")
    async with serve_on_loopback(app) as port:
        yield TusTarget(kind, f"http://127.0.0.1:{port}", port, "no-auth", tmp_path / "tus", seen)


@asynccontextmanager
async def serve_on_loopback(app: web.Application) -> AsyncIterator[int]:
    """Serve ``app`` on a free loopback port (yielded) until the block ends."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr,no-any-return]
    finally:
        await runner.cleanup()


def stored_blob(data_dir: Path, sha256: str) -> bytes | None:
    """The bytes of a blob the ingest service holds, or None."""
    path = blob_file(data_dir, sha256)
    return path.read_bytes() if path.exists() else None
