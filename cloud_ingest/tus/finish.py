"""Finishing a tus upload: verify and adopt its blob, record it, hand it to
``on_complete`` once, and repair an upload a crash left between those steps
(asked by HEAD and PATCH).  The handlers (``routes.py``) hold one
:class:`UploadFinisher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from cloud_ingest.blobs import BlobStore
from cloud_ingest.errors import ChecksumMismatch, Locked, UploadSha256Mismatch
from cloud_ingest.object_store import LocalObjectStore
from cloud_ingest.tus.core import UploadInfo
from cloud_ingest.tus.store import UploadStore

__all__ = ["UPLOADS", "CompletedUpload", "OnComplete", "UploadFinisher"]

log = logging.getLogger(__name__)
UPLOADS = "/v1/uploads"  # the tus collection (``routes.py`` mounts it)


@dataclass(frozen=True)
class CompletedUpload:
    """A finished upload, handed to ``on_complete`` once.

    ``blob_path`` is set when the metadata named a sha256 and the bytes were
    verified and moved into the blob store; otherwise the bytes stay at
    ``UploadStore.data_path(upload_id)``.
    """

    upload_id: str
    device_id: str
    length: int
    metadata: dict[str, str]
    sha256: str | None
    blob_path: Path | None


OnComplete = Callable[[CompletedUpload], Awaitable[None]]


class UploadFinisher:
    """Completes uploads on ``store``, adopting blobs into ``blobs``."""

    def __init__(self, store: UploadStore, blobs: BlobStore, on_complete: OnComplete) -> None:
        self.store = store
        self.blobs = blobs
        self.on_complete = on_complete

    async def finish(self, info: UploadInfo) -> UploadInfo:
        """Verify and adopt the blob (when a sha256 is named), record, notify."""
        sha256 = info.metadata.get("sha256")
        if sha256:
            # the running sha256 of what was written, else hashed from disk in a thread
            written = self.store.digests.hexdigest(info.upload_id, info.length or 0)
            try:
                await asyncio.to_thread(
                    self.store.adopt_blob, self.blobs, info.upload_id, sha256, written
                )
            except ChecksumMismatch as exc:
                # The chunks passed their own checksums (when sent), yet the whole is
                # wrong: no chunk can be named to resend, so the upload goes (410) and
                # the device starts a new one.
                await self.store.remove(info.upload_id)
                log.warning(
                    "upload %s of %s discarded: %s", info.upload_id, info.device_id, exc.detail
                )
                raise UploadSha256Mismatch(
                    f"upload {info.upload_id} is complete but its {info.length} bytes do not "
                    f"match the sha256 of its Upload-Metadata ({exc.detail}); the upload has "
                    f"been deleted: start a new upload with POST {UPLOADS}/"
                ) from exc
        self.store.digests.forget(info.upload_id)
        await asyncio.to_thread(self.store.guard.forget, info.upload_id)
        info = replace(info, completed=True)
        await self.store.persist(info)
        return await self._notify(info)

    async def _notify(self, info: UploadInfo) -> UploadInfo:
        """Hand the completed upload to ``on_complete`` (idempotent on its side).

        Also re-run by HEAD/PATCH for an upload completed just before a crash
        that came before ``on_complete`` returned.
        """
        sha256 = info.metadata.get("sha256")
        await self.on_complete(
            CompletedUpload(
                upload_id=info.upload_id,
                device_id=info.device_id,
                length=info.length or 0,
                metadata=dict(info.metadata),
                sha256=sha256,
                blob_path=self.blobs.local_path(sha256) if sha256 else None,
            )
        )
        info = replace(info, notified=True)
        await self.store.persist(info)
        return info

    def _adopted_before_crash(self, info: UploadInfo) -> bool:
        """The blob was moved into place but the completion was never saved."""
        sha256 = info.metadata.get("sha256")
        return (
            not info.completed
            and info.length is not None
            and sha256 is not None
            and not self.store.has_data(info.upload_id)
            and self.blobs.has(sha256)
        )

    def _written_not_finished(self, info: UploadInfo) -> bool:
        """Every byte is durable but the finish never ran (a crash or power cut between
        the last chunk's fsync and ``_finish``): a client resuming sees the whole offset
        and stops, so the server must finish the upload itself."""
        return (
            not info.completed
            and info.length is not None
            and self.store.has_data(info.upload_id)
            and self.store.offset(info) == info.length
        )

    async def _on_disk(self, check: Callable[[UploadInfo], bool], info: UploadInfo) -> bool:
        """``check(info)``: on local disk a stat or two, taken here (as ``current_offset``
        does: no hop per PATCH); on a worker thread where it asks an object store."""
        if self.store.chunks is None and isinstance(self.blobs.store, LocalObjectStore):
            return check(info)
        return await asyncio.to_thread(check, info)

    async def recover(self, info: UploadInfo) -> UploadInfo:
        """Finish or notify an upload a crash left written but not finished, or
        finished but not handed to ``on_complete``; else ``info`` as it is."""
        if await self._on_disk(self._written_not_finished, info):
            with contextlib.suppress(Locked):  # another request writes it: it finishes it
                async with self.store.writing(info.upload_id):
                    current = await self.store.load(info.upload_id)
                    if current is not None and await self._on_disk(
                        self._written_not_finished, current
                    ):
                        return await self.finish(current)
        if await self._on_disk(self._adopted_before_crash, info):
            info = replace(info, completed=True)
            await self.store.persist(info)
        if not info.completed or info.notified:
            return info
        with contextlib.suppress(Locked):  # another request writes it: it notifies
            async with self.store.writing(info.upload_id):
                current = await self.store.load(info.upload_id)
                if current is None or current.notified:
                    return current or info
                return await self._notify(current)
        return info
