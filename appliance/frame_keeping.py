"""What the appliance keeps of a frame besides its ``events`` records: the encrypted
original, its index entry (so the cloud can ask for it later, redacted on demand) and
a sampled blurred copy for ``raw_sampled``.

None of these ever fails a frame whose records are durable (a spool file read again
would store them twice): a failure costs what it was storing, and is logged and,
where a technician should see it, counted per camera (``raw_store_errors``,
``sample_store_errors``).
"""

from __future__ import annotations

import asyncio
import logging

from appliance.errors import ApplianceError, error_summary
from appliance.privacy.blobstore import BlobStore
from appliance.privacy.raw_frames import KeptFrame, RawFrames
from appliance.privacy.redaction import Box, Redaction
from appliance.sources.frames import Frame
from appliance.telemetry import Telemetry
from sync.errors import SyncError
from sync.outbox import Outbox
from sync.protocol import Stream

__all__ = ["FrameKeeper"]

_log = logging.getLogger(__name__)


class FrameKeeper:
    def __init__(
        self,
        *,
        blobs: BlobStore,
        raw_frames: RawFrames,
        outbox: Outbox,
        telemetry: Telemetry,
        keep_originals: bool,
    ) -> None:
        self._blobs = blobs
        self._raw = raw_frames
        self._outbox = outbox
        self._telemetry = telemetry
        self._keep_originals = keep_originals

    async def store_original(self, frame: Frame) -> str | None:
        """The kept original's sha256, or None when it is not kept.  A blob store that
        cannot take it (full disk, damaged day key) costs the original, never the frame's
        events records: it is logged and counted (``raw_store_errors``), the records go
        on without ``raw_sha256``."""
        if not self._keep_originals:
            return None
        try:
            stored = await asyncio.to_thread(self._blobs.put, frame.encoded, frame.event_time)
        except ApplianceError as exc:
            self._telemetry.raw_store_errors[frame.camera_id] += 1
            _log.error(
                "original frame not kept: %s",
                exc,
                extra={"camera": frame.camera_id, "retryable": exc.retryable},
            )
            return None
        return stored.sha256

    async def index_original(
        self,
        frame: Frame,
        original_sha256: str | None,
        redaction: Redaction | None,
        seqs: tuple[int, ...],
    ) -> None:
        """Index the kept original for the events records ``seqs`` durable so far, once
        its faces are known, so the cloud can ask for it later (redacted on demand).

        Done right after each append, not once every task is done: a crash while a slow
        task still runs must not leave a durable record whose frame cannot be requested
        (such a row is ``complete=False``: its plates are found again on request).  A
        failure to index is logged, not raised: the records are durable.
        """
        if original_sha256 is None or redaction is None:
            return  # not kept, or faces unknown: it never leaves unblurred
        kept = KeptFrame(
            seqs,
            original_sha256,
            frame.event_time,
            frame.camera_id,
            redaction.boxes,
            redaction.complete,
        )
        try:
            await asyncio.to_thread(self._raw.keep, kept)
        except OSError as exc:  # the records are durable: the frame is done all the same
            _log.error(
                "kept original not indexed (a raw request for it is answered unavailable): %s",
                exc,
                extra={"camera": frame.camera_id, "seqs": list(seqs)},
            )

    async def store_sample(self, frame: Frame, boxes: tuple[Box, ...], seq: int) -> None:
        """Store the sampled blurred copy and queue its ``BlobRef`` in ``raw_sampled``; a
        failure costs the sample only, logged and counted per camera
        (``sample_store_errors``)."""
        try:
            entry = await asyncio.to_thread(
                lambda: self._raw.store_blurred(  # image_bgr may decode the full frame
                    frame.image_bgr, boxes, seq, frame.event_time, frame.camera_id
                )
            )
            await self._outbox.append_blob_ref(Stream.RAW_SAMPLED, entry.ref())
        except (ApplianceError, SyncError, OSError) as exc:
            self._telemetry.sample_store_errors[frame.camera_id] += 1
            _log.error(
                "sampled frame not stored: %s",
                error_summary(exc),
                extra={"camera": frame.camera_id, "seq": seq, "reason": type(exc).__name__},
            )
