"""Face-blurred raw frames for the cloud: the seq -> blob index and the sync engine's BlobSource.

Each event record whose frame was blurred and kept gets one line in an
append-only JSON-lines index (events seq, blurred blob sha256/size/day,
event time, camera).  The sync engine asks :meth:`RawFrames.resolve_raw_request`
for the blobs behind a cloud raw request and :meth:`RawFrames.open_for_upload`
for a temp file with the exact (decrypted) bytes to upload.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from appliance.errors import ApplianceError
from appliance.privacy.blobstore import BlobStore
from sync.outbox import BlobRef
from sync.protocol import RawRequest

__all__ = ["RawFrameEntry", "RawFrames"]


@dataclass(frozen=True, slots=True)
class RawFrameEntry:
    seq: int
    sha256: str
    size: int
    day: str
    event_time: float
    camera_id: str

    def ref(self) -> BlobRef:
        meta = {
            "seq": str(self.seq),
            "camera_id": self.camera_id,
            "event_time": repr(self.event_time),
            "kind": "frame_blurred",
        }
        return BlobRef(self.sha256, self.size, meta)


class RawFrames:
    def __init__(self, store: BlobStore, index_path: Path, upload_dir: Path) -> None:
        self._store = store
        self._index_path = index_path
        self._upload_dir = upload_dir
        upload_dir.mkdir(parents=True, exist_ok=True)
        self._by_seq: dict[int, RawFrameEntry] = {}
        if index_path.exists():
            for line in index_path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = RawFrameEntry(**json.loads(line))
                except (ValueError, TypeError):
                    continue  # a torn last line after a crash
                self._by_seq[entry.seq] = entry

    def add(self, entry: RawFrameEntry) -> None:
        """Record one blurred frame (synchronous; call from a worker thread)."""
        with open(self._index_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(entry)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._by_seq[entry.seq] = entry

    def __len__(self) -> int:
        return len(self._by_seq)

    async def resolve_raw_request(self, request: RawRequest) -> list[BlobRef]:
        if request.seq is not None:
            entry = self._by_seq.get(request.seq)
            return [] if entry is None else [entry.ref()]
        since = request.since if request.since is not None else float("-inf")
        until = request.until if request.until is not None else float("inf")
        return [e.ref() for e in self._by_seq.values() if since <= e.event_time <= until]

    async def open_for_upload(self, ref: BlobRef) -> Path:
        return await asyncio.to_thread(self._write_upload_file, ref)

    def _write_upload_file(self, ref: BlobRef) -> Path:
        try:
            data = self._store.get(ref.sha256)
        except ApplianceError as exc:
            raise FileNotFoundError(f"blob {ref.sha256[:12]}... unavailable: {exc}") from None
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".jpg", dir=self._upload_dir)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return Path(name)
