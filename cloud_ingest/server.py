"""Running the service: ``serve(settings)`` until SIGTERM or SIGINT, then shut down gracefully.

On a signal the listening sockets close first, requests in flight get
``shutdown_timeout_s`` to finish (a tus PATCH keeps every byte it received),
then the app's cleanup closes the catalog.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl

from aiohttp import web

from cloud_ingest.app import build_app
from cloud_ingest.app_keys import METRICS
from cloud_ingest.errors import IngestError
from cloud_ingest.middleware import IngestAppRunner
from cloud_ingest.service_routes import build_metrics_app
from cloud_ingest.settings import IngestSettings

__all__ = ["METRICS_HOST", "ServeError", "serve"]

METRICS_HOST = "127.0.0.1"  # the scrape-only listener never leaves the host

log = logging.getLogger(__name__)


class ServeError(IngestError):
    """The service cannot start (bad TLS files, address in use); the detail says why."""

    status, error = 500, "cannot_serve"


def _ssl_context(settings: IngestSettings) -> ssl.SSLContext | None:
    if settings.tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls.cert_file, settings.tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ServeError(f"cannot load TLS certificate/key: {exc}") from exc
    return context


async def serve(settings: IngestSettings, *, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set or the process gets SIGTERM/SIGINT."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    ssl_context = _ssl_context(settings)
    app = build_app(settings)
    runner = IngestAppRunner(app, shutdown_timeout=settings.shutdown_timeout_s, access_log=None)
    await runner.setup()
    runners: list[web.AppRunner] = []
    try:
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            raise ServeError(f"cannot listen on {settings.host}:{settings.port}: {exc}") from exc
        if settings.metrics_port is not None:
            metrics_runner = web.AppRunner(build_metrics_app(app[METRICS]), access_log=None)
            await metrics_runner.setup()
            runners.append(metrics_runner)
            try:
                await web.TCPSite(metrics_runner, METRICS_HOST, settings.metrics_port).start()
            except OSError as exc:
                raise ServeError(
                    f"cannot listen on {METRICS_HOST}:{settings.metrics_port}: {exc}"
                ) from exc
            log.info(
                "metrics listening",
                extra={"url": f"http://{METRICS_HOST}:{settings.metrics_port}/metrics"},
            )
        scheme = "https" if ssl_context else "http"
        for address in runner.addresses:
            host, port = address[0], address[1]
            log.info(
                "listening",
                extra={
                    "url": f"{scheme}://{host}:{port}",
                    "port": port,
                    "data_dir": str(settings.data_dir),
                },
            )
        await stop.wait()
        log.info("shutting down")
    finally:
        for extra in runners:
            await extra.cleanup()
        await runner.cleanup()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("stopped")
