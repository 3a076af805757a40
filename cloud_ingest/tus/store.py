"""File store of tus uploads under ``DATA_DIR/uploads/``.

Per upload ``<id>.info`` (JSON, written atomically: temp, fsync, rename, fsync
dir) and ``<id>.bin`` (the bytes received).  The offset is the size of
``<id>.bin``: after a crash it is exactly the bytes that reached the disk.  A
checksummed chunk is written in place, and ``guard`` (``chunk_guard.py``)
knows how far the bytes were checked: on start a data file is cut back to
that, so an unverified chunk is never counted.

With ``chunks`` (an :class:`~cloud_ingest.tus.object_chunks.ObjectChunks`, in
fleet mode) the bytes live as part objects in the shared object store
instead of ``<id>.bin``; the offset is then the parts' length.  With
``state`` (a :class:`~cloud_ingest.tus.state_postgres.PostgresUploadState`)
the records and the write locks are shared by every instance: the async
methods (``load``, ``persist``, ``writing``, ...) are what the routes use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from cloud_ingest.blobs import BlobStore
from cloud_ingest.errors import ChecksumMismatch, Locked
from cloud_ingest.tus.chunk_guard import ChunkGuard, choose_guard
from cloud_ingest.tus.core import UploadInfo
from cloud_ingest.tus.digests import RunningDigests
from cloud_ingest.tus.object_chunks import ObjectChunks
from sync.shared.durable_file import make_directory_durably, replace_durably

if TYPE_CHECKING:  # asyncpg is imported only by a service with a shared catalog
    from cloud_ingest.tus.state_postgres import PostgresUploadState

__all__ = ["UploadStore"]

_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_EXPIRY_SAVE_STEP = 0.1  # of expire_after_s
_SETTLE_POLL_S = 0.05  # how often HEAD looks whether another instance's write ended


class UploadStore:
    """Upload records and bytes on disk, plus one asyncio lock per upload.

    ``guard`` (chosen for ``root``'s file system by default) keeps unchecked
    chunks from being counted after a crash; ``digests`` holds the running
    sha256 of the uploads being written.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_size: int = 8 << 30,
        expire_after_s: float = 7 * 86400.0,
        clock: Callable[[], float] = time.time,
        guard: ChunkGuard | None = None,
        chunks: ObjectChunks | None = None,
        state: PostgresUploadState | None = None,
    ) -> None:
        self.root = root
        self.chunks = chunks
        self.state = state
        self.clock = clock
        self.max_size = max_size
        self.expire_after_s = expire_after_s
        self._infos: dict[str, UploadInfo] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.digests = RunningDigests()
        make_directory_durably(root)
        self.guard = guard or choose_guard(root)
        self.guard.recover_all()

    # ------------------------------------------------------------ paths
    @staticmethod
    def valid_id(upload_id: str) -> bool:
        return _UPLOAD_ID.fullmatch(upload_id) is not None

    def data_path(self, upload_id: str) -> Path:
        return self.root / f"{upload_id}.bin"

    def pending_path(self, upload_id: str) -> Path:
        return self.root / f"{upload_id}.pending"

    def _info_path(self, upload_id: str) -> Path:
        return self.root / f"{upload_id}.info"

    # ------------------------------------------------------------ records
    def lock(self, upload_id: str) -> asyncio.Lock:
        return self._locks.setdefault(upload_id, asyncio.Lock())

    def new_id(self) -> str:
        return secrets.token_hex(16)

    def get(self, upload_id: str) -> UploadInfo | None:
        """The upload's info (cached, else read from disk), None if unknown."""
        if not self.valid_id(upload_id):
            return None
        info = self._infos.get(upload_id)
        if info is None:
            try:
                data = json.loads(self._info_path(upload_id).read_text())
            except (FileNotFoundError, ValueError):
                return None
            info = UploadInfo.from_json(data)
            self._infos[upload_id] = info
        return info

    def save(self, info: UploadInfo) -> None:
        """Write the info atomically (temp, fsync, os.replace, fsync dir)."""
        replace_durably(self._info_path(info.upload_id), json.dumps(info.to_json()).encode())
        self._infos[info.upload_id] = info

    def extend_expiry(self, info: UploadInfo) -> UploadInfo:
        """Move the expiry on to ``now + expire_after_s`` after a write, on disk.

        ``Upload-Expires`` tells the client this time, so it must survive a
        restart; to spare a write per PATCH it is saved only once it moves by
        a tenth of the window, and until then the saved (earlier) time stands.
        """
        expires_at = self.clock() + self.expire_after_s
        if expires_at - info.expires_at < self.expire_after_s * _EXPIRY_SAVE_STEP:
            return info
        info = replace(info, expires_at=expires_at)
        self.save(info)
        return info

    def create(self, info: UploadInfo) -> None:
        if self.chunks is None:
            self.data_path(info.upload_id).touch()
        else:
            self.chunks.create(info.upload_id)
        self.save(info)

    def offset(self, info: UploadInfo) -> int:
        """Bytes received: the length once complete, else the size on disk."""
        if info.completed:
            return info.length or 0
        if self.chunks is not None:
            return self.chunks.offset(info.upload_id)
        try:
            return self.data_path(info.upload_id).stat().st_size
        except FileNotFoundError:
            return 0

    async def current_offset(self, info: UploadInfo) -> int:
        """:meth:`offset`; a data file's size is one stat, taken here rather than
        queued behind the worker threads' fsyncs; parts in a store are counted on one."""
        if self.chunks is None:
            return self.offset(info)
        return await asyncio.to_thread(self.offset, info)

    def has_data(self, upload_id: str) -> bool:
        """Whether bytes of the upload are held (its data file, or its parts)."""
        if self.chunks is not None:
            return self.chunks.has_data(upload_id)
        return self.data_path(upload_id).exists()

    def adopt_blob(
        self, blobs: BlobStore, upload_id: str, sha256: str, written: str | None
    ) -> None:
        """Move the finished upload's bytes into ``blobs`` as ``sha256``, checked.

        ``written`` is the sha256 of the bytes as they were written, when known;
        otherwise they are hashed on the way.  :class:`ChecksumMismatch` when
        they differ from ``sha256`` (nothing is stored).
        """
        if written is not None and written != sha256:
            raise ChecksumMismatch(f"content has sha256 {written}, metadata says {sha256}")
        if self.chunks is not None:
            self.chunks.assemble_blob(upload_id, blobs, sha256)
        else:
            blobs.adopt(self.data_path(upload_id), sha256, verified=written is not None)

    def delete(self, upload_id: str) -> None:
        if self.chunks is not None:
            self.chunks.delete(upload_id)
        self.digests.forget(upload_id)
        self.guard.forget(upload_id)
        for path in (
            self._info_path(upload_id),
            self.data_path(upload_id),
            self.pending_path(upload_id),
        ):
            path.unlink(missing_ok=True)
        self._infos.pop(upload_id, None)
        lock = self._locks.get(upload_id)
        if lock is not None and not lock.locked():
            del self._locks[upload_id]

    # ------------------------------------------------------------ shared or local
    async def load(self, upload_id: str) -> UploadInfo | None:
        """The upload's info, None if unknown: the shared record, else :meth:`get`."""
        if self.state is None or not self.valid_id(upload_id):
            return self.get(upload_id)
        return await self.state.get(upload_id)

    async def persist(self, info: UploadInfo) -> None:
        if self.state is None:
            await asyncio.to_thread(self.save, info)
        else:
            await self.state.save(info)

    async def begin(self, info: UploadInfo) -> None:
        """Create the upload: its (empty) data, then its record."""
        if self.state is None:
            await asyncio.to_thread(self.create, info)
            return
        if self.chunks is not None:
            await asyncio.to_thread(self.chunks.create, info.upload_id)
        await self.state.save(info)

    async def keep_alive(self, info: UploadInfo) -> UploadInfo:
        """:meth:`extend_expiry`, saved where the record lives (a worker thread is
        asked only when there is something to save: it may be busy fsyncing)."""
        expires_at = self.clock() + self.expire_after_s
        if expires_at - info.expires_at < self.expire_after_s * _EXPIRY_SAVE_STEP:
            return info
        if self.state is None:
            return await asyncio.to_thread(self.extend_expiry, info)
        info = replace(info, expires_at=expires_at)
        await self.state.save(info)
        return info

    async def remove(self, upload_id: str) -> None:
        await asyncio.to_thread(self.delete, upload_id)
        if self.state is not None:
            await self.state.delete(upload_id)

    async def busy(self, upload_id: str) -> bool:
        """Whether a request (of this instance or, when shared, any) is writing it."""
        if self.is_busy(upload_id):
            return True
        return self.state is not None and await self.state.is_leased(upload_id)

    async def settled(self, upload_id: str) -> None:
        """Return once no instance holds the upload's lease (shared state; at once without).

        Polled: a lease is a row, not a lock anyone can wait on.  The caller bounds the wait.
        """
        if self.state is None:
            return
        while await self.state.is_leased(upload_id):
            await asyncio.sleep(_SETTLE_POLL_S)

    @contextlib.asynccontextmanager
    async def writing(self, upload_id: str) -> AsyncIterator[None]:
        """Hold the upload's write lock for the block; :class:`Locked` (423) when held.

        The lock of this process, and with shared state the upload's lease in
        PostgreSQL too, so that no two instances write one upload at once.
        """
        lock = self.lock(upload_id)
        if lock.locked():
            raise Locked("another request is writing this upload", headers={"Retry-After": "1"})
        async with lock:
            if self.state is None:
                yield
            else:
                async with self.state.lease(upload_id):
                    yield

    async def sweep_shared(self, now: float, *, limit: int = 1000) -> int:
        """Remove expired uploads of the shared state (any instance may); how many.

        Each is removed under its lease, so an upload a request writes is skipped.
        """
        if self.state is None:
            return 0
        removed = 0
        for upload_id in await self.state.expired(now, self.expire_after_s, limit):
            with contextlib.suppress(Locked):
                async with self.writing(upload_id):
                    await self.remove(upload_id)
                    removed += 1
        return removed

    def is_busy(self, upload_id: str) -> bool:
        lock = self._locks.get(upload_id)
        return lock is not None and lock.locked()

    def all_ids(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.info") if self.valid_id(p.stem))
