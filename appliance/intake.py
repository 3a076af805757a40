"""Frame intake: frames in from the local API, the spool and the demo cameras, through
the camera queues, run by the consumers through the pipeline into the outbox.

``FrameIntake`` owns the consumers and what happens to a frame that is not stored:
a spool frame's file stays (read again after a wait) or goes to ``failed/`` when
the outbox refused it for good; a queued frame (HTTP push, answered 202, or
synthetic) is lost, counted per camera and reason and logged once.

A frame pushed over the local API is answered one of two ways (``[local_api]
push_mode``): ``durable`` (the default) writes it to the spool, fsync'd, before the
201 that carries its spool file name, and the spool processes it exactly once from
there (``appliance.sources.push_spool``); ``queued`` puts it in the camera's queue
and answers 202 at once, faster, lost if the appliance is killed before it is stored.
"""

from __future__ import annotations

import asyncio
import logging
import time

from appliance.errors import ShuttingDown, error_summary
from appliance.metrics import DaemonMetrics
from appliance.pipeline import FrameProcessor
from appliance.sources.frame_metadata import MetadataValue
from appliance.sources.frames import Frame, decode_frame
from appliance.sources.push_spool import (
    PUSHED_PREFIX,
    PushAnswer,
    PushNotStored,
    write_pushed_frame,
)
from appliance.sources.queues import CameraQueues
from appliance.sources.spool import SpoolWatcher
from appliance.sources.synthetic import SyntheticYardCamera
from appliance.telemetry import Telemetry
from sync.errors import RecordRejected, SyncError

__all__ = ["FrameIntake"]

_log = logging.getLogger(__name__)

# frames run through the pipeline side by side.  A consumer holds its frame until every
# task's record is durable, and each task takes frames in order on its own worker, so a
# new scene's slow gate OCR holds the consumer of the next frame too (its OCR waits behind):
# with two, a third frame's face waited for that OCR (docs/INFERENCE.md)
CONSUMERS = 4
DRAIN_TIMEOUT_S = 30.0  # at stop: how long queued and in-flight frames may take


class FrameIntake:
    """The camera queues' consumers, and the entries that queue frames."""

    def __init__(
        self,
        processor: FrameProcessor,
        queues: CameraQueues,
        *,
        telemetry: Telemetry,
        metrics: DaemonMetrics,
        max_frame_bytes: int,
        push_mode: str = "durable",
    ) -> None:
        self._processor = processor
        self._durable_push = push_mode == "durable"
        self._queues = queues
        self._telemetry = telemetry
        self._metrics = metrics
        self._max_frame_bytes = max_frame_bytes
        self.spool: SpoolWatcher | None = None  # set once the spool (which queues here) exists
        self._consumers: list[asyncio.Task[None]] = []
        self._in_flight = 0
        self.accepting = False  # False before start and once stop began: new frames get 503

    def start(self, consumers: int = CONSUMERS) -> None:
        self.accepting = True
        self._consumers = [
            asyncio.create_task(self._consume(), name=f"consumer-{i}") for i in range(consumers)
        ]

    async def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Stop accepting; let queued and in-flight frames into the outbox, and the frames
        pushed durably (answered 201) that are still in the spool, up to ``timeout_s``;
        then stop the consumers.  (The spool watcher is stopped by now: the spool is read
        here.  A pushed frame left when time runs out is read at the next start.)"""
        self.accepting = False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pushed = self._pushed_waiting()
            if not (pushed or self._queues.total_depth() or self._in_flight):
                break
            if pushed and self.spool is not None:
                await self.spool.scan_once()
            await asyncio.sleep(0.05)
        for task in self._consumers:
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)
        self._consumers = []

    def _pushed_waiting(self) -> int:
        """Frames pushed durably, still in the spool and not yet read."""
        if self.spool is None or not self._durable_push:
            return 0
        return sum(path.name.startswith(PUSHED_PREFIX) for _, path in self.spool.pending())

    # ------------------------------------------------------------------ entries

    async def queue_frame(self, frame: Frame) -> None:
        self._metrics.frames.labels(frame.camera_id).inc()
        await self._queues.put(frame)

    async def submit_frame(
        self,
        camera_id: str,
        data: bytes,
        content_type: str | None,
        metadata: dict[str, MetadataValue],
    ) -> PushAnswer:
        """Local API entry: decode (off the loop) to refuse a bad frame at once; then write
        it to the spool before answering 201 (durable) or queue it and answer 202."""
        if not self.accepting:
            raise ShuttingDown("the appliance is shutting down; retry shortly")
        try:
            frame = await asyncio.to_thread(
                decode_frame,
                camera_id,
                data,
                content_type,
                max_bytes=self._max_frame_bytes,
                metadata=metadata,
                reduction=self._processor.jpeg_reduction,
            )
        except Exception as exc:
            self._metrics.bad.labels(type(exc).__name__).inc()
            self._telemetry.bad_frames[camera_id] += 1
            raise
        if not self._durable_push:
            await self.queue_frame(frame)
            depth = self._queues.depths().get(camera_id, 0)
            return PushAnswer(202, {"accepted": True, "camera": camera_id, "queue_depth": depth})
        spool = self.spool
        if spool is None:  # the builder makes a spool whenever pushes are durable
            raise PushNotStored("no spool to write the frame to; retry shortly")
        kind = "png" if frame.content_type == "image/png" else "jpg"
        name = await asyncio.to_thread(
            write_pushed_frame, spool.root, camera_id, data, kind, frame.metadata
        )
        spool.wake()  # counted in ``frames`` when the spool queues it, as a dropped file is
        waiting = await asyncio.to_thread(self._pushed_waiting)  # the camera's backpressure
        body = {"accepted": True, "camera": camera_id, "id": name, "stored": "spool"}
        return PushAnswer(201, {**body, "spool_depth": waiting})

    async def synthetic_camera(self, camera_id: str, seed: int, fps: float) -> None:
        """A demo camera: synthetic yard frames at ``fps``, queued as a camera's would be."""
        camera = SyntheticYardCamera(seed)
        index = 0
        while True:
            encoded = await asyncio.to_thread(_encode_synthetic, camera, index)
            frame = await asyncio.to_thread(
                decode_frame,
                camera_id,
                encoded,
                "image/jpeg",
                max_bytes=self._max_frame_bytes,
                source="synthetic",
                reduction=self._processor.jpeg_reduction,
            )
            await self.queue_frame(frame)
            index += 1
            await asyncio.sleep(1.0 / fps)

    # ------------------------------------------------------------------ consumers

    async def _consume(self) -> None:
        while True:
            frame = await self._queues.get()
            self._in_flight += 1
            try:
                await self._process(frame)
            finally:
                self._in_flight -= 1

    async def _process(self, frame: Frame) -> None:
        spool = self.spool if frame.spool_path is not None else None
        try:
            # a spool frame's records carry its file's receipt: read again after a crash,
            # the file is known stored and only moved
            await self._processor.process(
                frame, receipt=None if spool is None else spool.receipt_of(frame)
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the consumer
            if spool is not None and isinstance(exc, RecordRejected):
                await self._refused_for_good(spool, frame, exc)
            else:
                self._not_stored(frame, exc)
            return
        if spool is not None:
            try:
                await spool.finish(frame)
            except Exception:  # noqa: BLE001 - the records are durable, with the file's receipt
                _log.exception(
                    "spool: cannot move a stored frame's file to processed/ (its receipt in the"
                    " outbox keeps it from being stored again)",
                    extra={"camera": frame.camera_id, "file": frame.spool_path},
                )  # ``finish`` took the file out of flight whatever happened

    async def _refused_for_good(
        self, spool: SpoolWatcher, frame: Frame, exc: RecordRejected
    ) -> None:
        """The outbox refused the frame's records for good (one over ``max_record_bytes``,
        say): reading the file again makes the same records, so a spool frame's file goes
        to ``failed/`` with a ``.why`` note, counted per camera and reason
        (``spool.refused``) and logged once, and the spool does not wait: the other files
        go on.  Only ``RecordRejected`` says so: another permanent error (the outbox
        closed at shutdown) says nothing about the frame, whose file is read again.

        A file ``failed/`` does not take is handled as a refusal for now (``_not_stored``).
        """
        camera, reason, summary = frame.camera_id, type(exc).__name__, error_summary(exc)
        why = f"the outbox refused this frame's records for good: {summary}"
        try:
            moved = await asyncio.to_thread(spool.fail, frame, why)
        except OSError as move_error:
            _log.error(
                "spool frame refused for good (%s), but its file cannot be moved to failed/: %s",
                summary,
                move_error,
                extra={"camera": camera, "reason": reason, "file": frame.spool_path},
            )
            self._not_stored(frame, exc)  # stays, read again after the spool's wait
            return
        self._telemetry.spool_refused[(camera, reason)] += 1
        where = (
            f"its file moved to {moved.relative_to(spool.root)} (see its .why note)"
            if moved is not None
            else "its file was replaced or removed since it was read"
        )
        _log.error(
            "spool frame from %s refused for good by the outbox: %s; %s",
            camera,
            summary,
            where,
            extra={"camera": camera, "reason": reason, "file": frame.spool_path},
        )

    def _not_stored(self, frame: Frame, exc: Exception) -> None:
        """The frame's results could not be (all) stored: an outbox full after the bounded
        wait (``OutboxFull``), a full disk (``OutboxDiskFull``), or another failure (for a
        spool frame not one refused for good: ``_refused_for_good``).

        A spool frame's file stays in the spool and the spool waits before reading again
        (``SpoolWatcher.retry_later``).  A queued frame (HTTP push, answered 202, or
        synthetic) has nowhere to go back to: it is lost, counted per camera and reason
        (``frames_not_stored`` in ``/v1/status`` and telemetry) and logged once.
        """
        camera, reason, summary = frame.camera_id, type(exc).__name__, error_summary(exc)
        unexpected = None if isinstance(exc, SyncError) else exc  # a bug: keep the traceback
        if self.spool is not None and frame.spool_path is not None:
            self._telemetry.spool_retries[(camera, reason)] += 1
            wait = self.spool.retry_later(frame, summary)
            _log.warning(
                "spool frame not stored, its file stays in the spool: %s; reading again in %.1f s",
                summary,
                wait,
                exc_info=unexpected,
                extra={
                    "camera": camera,
                    "reason": reason,
                    "file": frame.spool_path,
                    "retry_in_s": round(wait, 1),
                },
            )
            return
        self._telemetry.frames_not_stored[(camera, reason)] += 1
        self._metrics.not_stored.labels(camera, reason).inc()
        _log.error(
            "frame from %s lost after it was queued: its results could not all be stored: %s",
            camera,
            summary,
            exc_info=unexpected,
            extra={"camera": camera, "reason": reason, "source": frame.source},
        )


def _encode_synthetic(camera: SyntheticYardCamera, index: int) -> bytes:
    return camera.frame(index).encode()
