"""The ingest service on a loopback port, run by its own event loop in a thread.

For clients that block (schemathesis calls through ``requests``): the service
runs as in production (IngestAppRunner, real SQLite, real lake) while the test
thread sends requests.  Provisions one device and one operator.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from concurrent.futures import Future
from types import TracebackType

from aiohttp import web

from cloud_ingest.app import build_app
from cloud_ingest.app_keys import CATALOG
from cloud_ingest.middleware import IngestAppRunner
from cloud_ingest.provisioning import add_device, add_operator
from cloud_ingest.settings import IngestSettings

__all__ = ["ThreadedIngest"]


class ThreadedIngest:
    """``with ThreadedIngest(settings) as server:`` then ``server.url`` and ``server.tokens``."""

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self.url = ""
        self.tokens: dict[str, str] = {}
        self.device_id = f"dev-{secrets.token_hex(4)}"
        self.site_id = "yard-a"
        self._ready: Future[None] = Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="threaded-ingest", daemon=True)

    def __enter__(self) -> ThreadedIngest:
        self._thread.start()
        self._ready.result(timeout=30)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = build_app(self.settings)
        runner = IngestAppRunner(app, access_log=None)
        try:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            self.url = f"http://{host}:{port}"
            catalog = app[CATALOG]
            device = await add_device(catalog, self.device_id, self.site_id, actor="test", now=0)
            operator = await add_operator(
                catalog, f"op-{secrets.token_hex(4)}", actor="test", now=0
            )
            self.tokens = {"device": device.token, "operator": operator.token}
        except BaseException as exc:
            self._ready.set_exception(exc)
            await runner.cleanup()
            raise
        self._ready.set_result(None)
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
