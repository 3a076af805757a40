"""The app factory: ``build_app(settings)`` wires catalog, lake, routes and background work.

Middlewares run outermost first: errors (every failure becomes JSON), metrics,
authentication.  The catalog opens on startup and closes on cleanup; a
supervised background task sweeps expired uploads and raw requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from cloud_ingest.admin import add_admin_routes
from cloud_ingest.app_keys import CATALOG, CLOCK, METRICS, SETTINGS
from cloud_ingest.auth import auth_middleware
from cloud_ingest.batches import add_batch_routes
from cloud_ingest.catalog_open import open_catalog
from cloud_ingest.catalog_sqlite import make_private_dir
from cloud_ingest.completions import make_on_complete
from cloud_ingest.handshake import add_handshake_routes
from cloud_ingest.lake import remove_partial_files
from cloud_ingest.metrics import IngestMetrics
from cloud_ingest.middleware import error_middleware, metrics_middleware
from cloud_ingest.models.routes import add_model_routes
from cloud_ingest.raw_requests import add_raw_request_routes
from cloud_ingest.service_routes import add_service_routes
from cloud_ingest.settings import IngestSettings
from cloud_ingest.storage import STORAGE, open_storage, store_threads
from cloud_ingest.tus import UploadStore, add_tus_routes, sweep_expired
from cloud_ingest.tus.object_chunks import ObjectChunks

if TYPE_CHECKING:
    from cloud_ingest.tus.state_postgres import PostgresUploadState

__all__ = ["build_app"]

log = logging.getLogger(__name__)


def build_app(
    settings: IngestSettings, *, clock: Callable[[], float] = time.time
) -> web.Application:
    """A ready-to-run aiohttp application for ``settings`` (nothing opened until startup)."""
    app = web.Application(
        middlewares=[error_middleware, metrics_middleware, auth_middleware],
        client_max_size=max(settings.max_batch_bytes, settings.max_json_bytes),
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[METRICS] = IngestMetrics()
    app[STORAGE] = open_storage(settings)
    app.cleanup_ctx.append(store_threads)
    app.cleanup_ctx.append(_catalog_context)
    add_service_routes(app)
    add_handshake_routes(app)
    add_batch_routes(app)
    add_raw_request_routes(app)
    add_admin_routes(app)
    add_model_routes(app)  # after the catalog's context: it opens its tables
    upload_sweep = _add_tus(app, settings)  # after the catalog's context: it binds its pool
    app.cleanup_ctx.append(_sweeper_context(upload_sweep))
    return app


def _add_tus(app: web.Application, settings: IngestSettings) -> Callable[[float], Awaitable[int]]:
    """Mount the tus server (/v1/uploads) and HEAD /v1/blobs.

    With a PostgreSQL catalog and an object store (fleet mode) the uploads'
    records and write locks are in PostgreSQL, so any instance takes any request.
    """
    storage = app[STORAGE]
    state = _shared_upload_state(app) if storage.shared and settings.catalog else None
    store = UploadStore(
        settings.uploads_dir,
        max_size=settings.max_upload_bytes,
        expire_after_s=settings.upload_expiry_s,
        chunks=ObjectChunks(storage.store, settings.uploads_dir, state) if storage.shared else None,
        state=state,
    )
    add_tus_routes(app, store, storage.blobs, make_on_complete(app))

    async def sweep(now: float) -> int:
        return int(sweep_expired(store, now)) + await store.sweep_shared(now)

    return sweep


def _shared_upload_state(app: web.Application) -> PostgresUploadState:
    """The tus state in PostgreSQL, on the catalog's pool once it is open."""
    from cloud_ingest.catalog_postgres import PostgresCatalog
    from cloud_ingest.tus.state_postgres import PostgresUploadState

    state = PostgresUploadState()

    async def bind(app: web.Application) -> None:
        catalog = app[CATALOG]
        assert isinstance(catalog, PostgresCatalog)  # settings.catalog names PostgreSQL
        state.bind(catalog.pool)

    app.on_startup.append(bind)
    return state


async def _catalog_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    for directory in (
        settings.data_dir,
        settings.lake_dir,
        settings.blobs_dir,
        settings.uploads_dir,
    ):
        await asyncio.to_thread(make_private_dir, directory)
    removed = await asyncio.to_thread(remove_partial_files, app[STORAGE].lake)
    if removed:
        log.warning("removed %d partial lake files left by a crash", removed)
    catalog = await open_catalog(settings)
    app[CATALOG] = catalog
    try:
        yield
    finally:
        await catalog.close()


def _sweeper_context(
    upload_sweep: Callable[[float], Awaitable[int]],
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_sweep_forever(app, upload_sweep), name="ingest-sweeper")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return context


async def _sweep_forever(
    app: web.Application, upload_sweep: Callable[[float], Awaitable[int]]
) -> None:
    interval = app[SETTINGS].sweep_interval_s
    while True:
        await asyncio.sleep(interval)
        try:
            now = app[CLOCK]()
            expired = await app[CATALOG].expire_raw_requests(now)
            removed = await upload_sweep(now)
            if expired or removed:
                log.info(
                    "sweep", extra={"raw_requests_expired": expired, "uploads_removed": removed}
                )
        except Exception:
            log.exception("sweep failed; retrying next interval")
