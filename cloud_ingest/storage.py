"""The service's storage, built once from the settings: the object store, the lake, the blobs.

Without ``store`` in the settings everything lives in the data directory (the
embedded default: ``DATA_DIR/lake``, ``DATA_DIR/blobs``, tus chunks in
``DATA_DIR/uploads``).  With ``store = "s3://bucket/prefix?endpoint=..."`` the
lake, the blobs and the chunks of uploads in progress live in that S3 store,
so any instance can serve any request; only temp files stay on local disk.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from cloud_ingest.blobs import BlobStore
from cloud_ingest.lake import Lake
from cloud_ingest.object_store import LocalObjectStore, ObjectStore
from cloud_ingest.object_store_s3 import S3ObjectStore, parse_s3_url
from cloud_ingest.settings import IngestSettings

__all__ = ["STORAGE", "Storage", "open_storage"]


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
