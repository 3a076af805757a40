"""Redacted raw frames for the cloud: the seq -> blob index and the sync engine's BlobSource.

Only redacted copies leave the site: every face, plate and free text
(``appliance.privacy.redaction``) blurred beyond recognition.

Two append-only JSON-lines indexes:

* ``raw-index.jsonl``: frames already blurred and stored (sampled ones, and
  requested ones once blurred): events seq, blurred blob sha256/size/day,
  event time, camera.
* ``kept-frames.jsonl``: every frame whose original is kept (encrypted) on site,
  with its events seqs and the boxes to hide in it.  When the cloud asks for
  one of these (raw on demand), the original is decrypted, those boxes blurred,
  and the blurred copy stored and indexed: only blurred copies ever leave.  A
  kept frame indexed before every PII task had run on it (a crash while
  ``gate_ocr`` still ran) is ``complete=False``: on request its boxes are found
  again by the ``detect`` callable (the loaded tasks), and without one it is
  answered unavailable rather than sent with a plate showing.

The sync engine asks :meth:`RawFrames.resolve_raw_request` for the blobs behind
a cloud raw request and :meth:`RawFrames.open_for_upload` for a temp file with
the exact (decrypted) bytes to upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.errors import ApplianceError
from appliance.inference.face_blur import blur_faces
from appliance.privacy.blobstore import BlobStore, BlobWriteFailed
from appliance.privacy.redaction import RELEASE_MARGIN, Box
from sync.outbox import BlobRef
from sync.protocol import RawRequest

__all__ = ["Detect", "KeptFrame", "RawFrameEntry", "RawFrames", "blurred_jpeg"]

Detect = Callable[[np.ndarray[Any, Any]], tuple[Box, ...] | None]
_log = logging.getLogger(__name__)


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


@dataclass(frozen=True, slots=True)
class KeptFrame:
    """An original frame kept encrypted on site, with what is needed to redact it later."""

    seqs: tuple[int, ...]  # its events records (one per task)
    original_sha256: str
    event_time: float
    camera_id: str
    boxes: tuple[Box, ...]  # faces, plates and free text found so far
    complete: bool  # every loaded PII task had run: ``boxes`` is all there is to hide


def blurred_jpeg(image_bgr: np.ndarray[Any, Any], boxes: Sequence[Box]) -> bytes:
    """The frame with every box (faces, plates, text) blurred, as the JPEG that may leave.

    Filled from the surroundings, not pixelated or Gaussian-blurred: BlazeFace still
    scores a pixelated or Gaussian-blurred face as a face now and then (the blob of a
    head keeps its shape; docs/INFERENCE.md), a filled box holds none of its pixels."""
    blurred = blur_faces(image_bgr, boxes, margin=RELEASE_MARGIN, method="fill")
    ok, encoded = cv2.imencode(".jpg", blurred, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError("JPEG encoding of the blurred frame failed")
    return encoded.tobytes()


def _read_lines(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a torn last line after a crash
    return rows


def _boxes(rows: Any) -> tuple[Box, ...]:
    return tuple((int(x), int(y), int(w), int(h)) for x, y, w, h in rows)


def _append_line(path: Path, row: dict[str, Any]) -> None:
    """Append one row and fsync.  A line torn by a crash (no newline at the end) is closed
    first, so the new row is not glued to it; a failed write (full disk) is cut back off,
    so it tears nothing either (``BlobWriteFailed``, retryable)."""
    line = (json.dumps(row) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        if start and os.pread(fd, 1, start - 1) != b"\n":
            line = b"\n" + line
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise BlobWriteFailed(f"cannot append to {path.name}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


_UPLOAD_PREFIX = "upload-"


def _remove_stale_uploads(upload_dir: Path) -> None:
    for stale in upload_dir.glob(f"{_UPLOAD_PREFIX}*"):
        with contextlib.suppress(OSError):
            stale.unlink()


class RawFrames:
    def __init__(
        self, store: BlobStore, index_path: Path, upload_dir: Path, detect: Detect | None = None
    ) -> None:
        self._store = store
        self._detect = detect
        self._index_path = index_path
        self._kept_path = index_path.with_name("kept-frames.jsonl")
        self._upload_dir = upload_dir
        upload_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_uploads(upload_dir)  # copies a crash left behind mid-upload
        self._by_seq: dict[int, RawFrameEntry] = {}
        self._kept: dict[int, KeptFrame] = {}
        for row in _read_lines(index_path):
            try:
                entry = RawFrameEntry(**row)
            except TypeError:
                continue
            self._by_seq[entry.seq] = entry
        for row in _read_lines(self._kept_path):
            try:
                kept = KeptFrame(
                    tuple(row["seqs"]),
                    row["original_sha256"],
                    row["event_time"],
                    row["camera_id"],
                    _boxes(row.get("boxes", row.get("faces"))),
                    bool(row.get("complete", False)),  # rows without it: found again on request
                )
            except (KeyError, TypeError, ValueError):
                continue
            self._kept.update(dict.fromkeys(kept.seqs, kept))

    def add(self, entry: RawFrameEntry) -> None:
        """Record one blurred frame (synchronous; call from a worker thread)."""
        _append_line(self._index_path, asdict(entry))
        self._by_seq[entry.seq] = entry

    def keep(self, kept: KeptFrame) -> None:
        """Record a kept original so the cloud can ask for it (synchronous; worker thread)."""
        _append_line(self._kept_path, asdict(kept))
        self._kept.update(dict.fromkeys(kept.seqs, kept))

    def store_blurred(
        self,
        image_bgr: np.ndarray[Any, Any],
        boxes: Sequence[Box],
        seq: int,
        event_time: float,
        camera_id: str,
    ) -> RawFrameEntry:
        """Blur, store encrypted and index one frame (synchronous; worker thread)."""
        stored = self._store.put(blurred_jpeg(image_bgr, boxes), event_time)
        entry = RawFrameEntry(seq, stored.sha256, stored.size, stored.day, event_time, camera_id)
        self.add(entry)
        return entry

    def __len__(self) -> int:
        return len(self._by_seq)

    def _blur_kept(self, kept: KeptFrame, seq: int) -> RawFrameEntry | None:
        try:
            original = self._store.get(kept.original_sha256)
        except ApplianceError:
            return None  # shredded by retention or lost: the request is answered unavailable
        image = cv2.imdecode(np.frombuffer(original, dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            return None
        boxes: tuple[Box, ...] | None = kept.boxes
        if not kept.complete:  # indexed before every PII task ran: find the boxes again
            try:
                boxes = self._detect(image) if self._detect is not None else None
            except Exception as exc:  # noqa: BLE001 - a task failed: the frame cannot be checked
                _log.warning("kept frame of seq %d not sent: a PII task failed on it: %s", seq, exc)
                return None
        if boxes is None:
            _log.warning("kept frame of seq %d not sent: what to redact in it is unknown", seq)
            return None
        return self.store_blurred(image, boxes, seq, kept.event_time, kept.camera_id)

    async def _entry(self, seq: int) -> RawFrameEntry | None:
        entry = self._by_seq.get(seq)
        if entry is None and (kept := self._kept.get(seq)) is not None:
            entry = next((self._by_seq[s] for s in kept.seqs if s in self._by_seq), None)
            if entry is None:
                entry = await asyncio.to_thread(self._blur_kept, kept, min(kept.seqs))
        return entry

    async def resolve_raw_request(self, request: RawRequest) -> list[BlobRef]:
        """The blurred blobs behind a request (blurring kept originals on demand)."""
        if request.seq is not None:
            entry = await self._entry(request.seq)
            return [] if entry is None else [entry.ref()]
        since = request.since if request.since is not None else float("-inf")
        until = request.until if request.until is not None else float("inf")
        seqs = {min(k.seqs) for k in self._kept.values() if since <= k.event_time <= until}
        seqs |= {s for s, e in self._by_seq.items() if since <= e.event_time <= until}
        refs: dict[str, BlobRef] = {}
        for seq in sorted(seqs):
            entry = await self._entry(seq)
            if entry is not None:
                refs[entry.sha256] = entry.ref()
        return list(refs.values())

    async def open_for_upload(self, ref: BlobRef) -> Path:
        return await asyncio.to_thread(self._write_upload_file, ref)

    async def release_upload(self, path: Path) -> None:
        """Delete the temporary copy ``open_for_upload`` made (one per attempt)."""
        if path.parent != self._upload_dir or not path.name.startswith(_UPLOAD_PREFIX):
            _log.error("not deleting %s: not an upload copy of this blob source", path)
            return
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:  # swept at the next start
            _log.warning("cannot delete upload copy %s: %s", path, exc)

    def _write_upload_file(self, ref: BlobRef) -> Path:
        try:
            data = self._store.get(ref.sha256)
        except ApplianceError as exc:
            raise FileNotFoundError(f"blob {ref.sha256[:12]}... unavailable: {exc}") from None
        fd, name = tempfile.mkstemp(prefix=_UPLOAD_PREFIX, suffix=".jpg", dir=self._upload_dir)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return Path(name)
