"""What happens when a tus upload completes: catalog rows, raw request state, audit.

The tus server (cloud_ingest/tus) awaits the callback built here once per
finished upload, after the bytes are in the blob store, and again when a crash
came before it returned; the catalog writes all of it in one transaction, once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from aiohttp import web

from cloud_ingest.app_keys import CATALOG, CLOCK, METRICS
from cloud_ingest.catalog import UploadRecord

__all__ = ["CompletedUploadInfo", "make_on_complete"]


class CompletedUploadInfo(Protocol):
    """The fields of ``cloud_ingest.tus.CompletedUpload`` this module reads."""

    @property
    def upload_id(self) -> str: ...
    @property
    def device_id(self) -> str: ...
    @property
    def length(self) -> int: ...
    @property
    def metadata(self) -> Mapping[str, str]: ...
    @property
    def sha256(self) -> str | None: ...


def make_on_complete(app: web.Application) -> Callable[[CompletedUploadInfo], Awaitable[None]]:
    """The ``on_complete`` callback for ``add_tus_routes``, bound to ``app``."""

    async def on_complete(upload: CompletedUploadInfo) -> None:
        recorded = await app[CATALOG].record_upload(
            UploadRecord(
                upload_id=upload.upload_id,
                device_id=upload.device_id,
                length=upload.length,
                sha256=upload.sha256,
                completed_at=app[CLOCK](),
                metadata=dict(upload.metadata),
            ),
            actor=f"device:{upload.device_id}",
        )
        if recorded:  # not a re-run after a crash
            app[METRICS].uploads_completed.inc()

    return on_complete
