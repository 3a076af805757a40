"""File store of tus uploads under ``DATA_DIR/uploads/``.

Per upload ``<id>.info`` (JSON, written atomically: temp, fsync, rename, fsync
dir) and ``<id>.bin`` (the bytes received).  The offset is the size of
``<id>.bin``: after a crash it is exactly the bytes that reached the disk.  A
checksummed chunk is written in place, and ``guard`` (``chunk_guard.py``)
knows how far the bytes were checked: on start a data file is cut back to
that, so an unverified chunk is never counted.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from cloud_ingest.tus.chunk_guard import ChunkGuard, choose_guard
from cloud_ingest.tus.core import UploadInfo
from cloud_ingest.tus.digests import RunningDigests
from sync.shared.durable_file import make_directory_durably, replace_durably

__all__ = ["UploadStore"]

_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_EXPIRY_SAVE_STEP = 0.1  # of expire_after_s


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
    ) -> None:
        self.root = root
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
        self.data_path(info.upload_id).touch()
        self.save(info)

    def offset(self, info: UploadInfo) -> int:
        """Bytes received: the length once complete, else the size on disk."""
        if info.completed:
            return info.length or 0
        try:
            return self.data_path(info.upload_id).stat().st_size
        except FileNotFoundError:
            return 0

    def delete(self, upload_id: str) -> None:
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

    def is_busy(self, upload_id: str) -> bool:
        lock = self._locks.get(upload_id)
        return lock is not None and lock.locked()

    def all_ids(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.info") if self.valid_id(p.stem))
