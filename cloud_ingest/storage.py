"""The service's storage, built once from the settings: the object store, the lake, the blobs.

Without ``store`` in the settings everything lives in the data directory (the
embedded default: ``DATA_DIR/lake``, ``DATA_DIR/blobs``, tus chunks in
``DATA_DIR/uploads``).  With ``store = "s3://bucket/prefix?endpoint=..."`` the
lake, the blobs and the chunks of uploads in progress live in that S3 store,
so any instance can serve any request; only temp files stay on local disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web

from cloud_ingest.blobs import BlobStore
from cloud_ingest.lake import Lake
from cloud_ingest.object_store import LocalObjectStore, ObjectStore
from cloud_ingest.object_store_s3 import S3ObjectStore, parse_s3_url
from cloud_ingest.settings import IngestSettings

__all__ = ["STORAGE", "STORE_THREADS", "Storage", "open_storage", "store_threads"]

STORE_THREADS = 64  # worker threads for blocking object-store calls (each waits on the network)


@dataclass(frozen=True)
class Storage:
    store: ObjectStore
    lake: Lake
    blobs: BlobStore

    @property
    def shared(self) -> bool:
        """Whether other instances see the same objects (an S3 store)."""
        return not isinstance(self.store, LocalObjectStore)


STORAGE: web.AppKey[Storage] = web.AppKey("yardlink.storage", Storage)


def open_storage(settings: IngestSettings) -> Storage:
    """The storage the settings name (S3 is reached once here: a bad bucket fails early)."""
    store: ObjectStore
    if settings.store is None:
        store = LocalObjectStore(settings.data_dir)
    else:
        secret = settings.store_secret_access_key
        store = S3ObjectStore(
            parse_s3_url(settings.store),
            access_key=settings.store_access_key_id,
            secret_key=secret.get_secret_value() if secret is not None else None,
            create_bucket=settings.store_create_bucket,
        )
    return Storage(store=store, lake=Lake(store), blobs=BlobStore(store))


async def store_threads(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context: enough worker threads for a store reached over the network.

    Every object-store call is blocking and runs on the loop's default executor,
    which has only ``cpu_count + 4`` threads: with S3 each call mostly waits on
    the network, so a few slow requests would hold every thread.  A directory
    store keeps the default pool.
    """
    if app[STORAGE].shared:
        executor = ThreadPoolExecutor(max_workers=STORE_THREADS, thread_name_prefix="store")
        asyncio.get_running_loop().set_default_executor(executor)
    yield
