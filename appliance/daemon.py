"""The composition root: build every part of the appliance from a ``SiteConfig`` and run it.

``Daemon.start()`` opens the outbox and blob store, loads the inference tasks
(off the event loop), then starts the frame consumers and the supervised
tasks (``appliance.supervisor``: restarted with a backoff when they fail): the
spool watcher, synthetic demo cameras, the telemetry and retention loops; then
the local API.  ``Daemon.stop()`` stops accepting frames, drains the
queued and in-flight frames into the outbox, awaits every task and closes the
outbox.  ``run_daemon`` wires SIGTERM/SIGINT to ``stop``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance.api import ApiRunner, build_app
from appliance.config import SiteConfig
from appliance.counter_metrics import CountersCollector, CounterSource
from appliance.errors import BadFrame, error_summary
from appliance.inference.tasks import InferenceTask, build_tasks
from appliance.metrics import DaemonMetrics
from appliance.outbox_report import outbox_status
from appliance.pipeline import FrameProcessor
from appliance.privacy.blobstore import BlobStore
from appliance.privacy.raw_frames import RawFrames
from appliance.privacy.redaction import PiiDetector
from appliance.privacy.tokens import PlateTokenizer, load_plate_key
from appliance.sampling import SamplingPolicy
from appliance.sources.frame_metadata import MetadataValue
from appliance.sources.frames import Frame, decode_frame
from appliance.sources.queues import CameraQueues
from appliance.sources.spool import SpoolWatcher
from appliance.sources.synthetic import SyntheticYardCamera
from appliance.supervisor import Supervisor
from appliance.sync_routes import add_sync_routes
from appliance.telemetry import Telemetry
from sync.engine import SyncEngine
from sync.errors import RecordRejected, SyncError
from sync.outbox import Outbox, OutboxClass
from sync.protocol import ModelInfo

__all__ = ["Daemon", "run_daemon"]

_log = logging.getLogger("appliance.daemon")
_CONSUMERS = 2
_DRAIN_TIMEOUT_S = 30.0


class Daemon:
    def __init__(self, config: SiteConfig, *, supervisor: Supervisor | None = None) -> None:
        self.config = config
        data_dir = Path(config.site.data_dir)
        self.data_dir = data_dir
        self.camera_ids = {camera.id for camera in config.sources.cameras}
        self.metrics = DaemonMetrics(
            lambda: self.queues.total_depth(),
            lambda: None if self.outbox is None else self.outbox.stats(),
        )
        self.registry = self.metrics.registry
        self.queues = CameraQueues(config.sources.queue_bound, on_drop=self._on_drop)
        self.tasks: dict[str, InferenceTask] = {}
        self.model_failures: dict[str, str] = {}
        self.telemetry = Telemetry({})
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self.supervisor = supervisor or Supervisor()
        self._consumers: list[asyncio.Task[None]] = []
        self._in_flight = 0
        self._accepting = False
        self._runner: web.AppRunner | None = None
        self.outbox: Outbox | None = None
        self.spool: SpoolWatcher | None = None
        self.sync_engine: SyncEngine | None = None
        self.registry.register(CountersCollector(self._failure_counters()))
        self.api_url = ""  # http://host:port or unix:/path, set once the API listens
        self.started_at = time.time()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        config = self.config
        self.data_dir.mkdir(parents=True, exist_ok=True)
        privacy = config.privacy
        key_file = Path(privacy.plate_key_file or self.data_dir / "plate.key")
        tokenizer = PlateTokenizer(load_plate_key(privacy.plate_secret, key_file))
        self.blobs = BlobStore(
            self.data_dir / "blobs", Path(privacy.blob_keys_dir or self.data_dir / "blob-keys")
        )
        self.tasks, self.model_failures = await asyncio.to_thread(
            build_tasks, config.inference, Path(config.models_dir)
        )
        self.raw_frames = RawFrames(
            self.blobs,
            self.data_dir / "raw-index.jsonl",
            self.data_dir / "uploads",
            detect=PiiDetector(self.tasks).boxes,
        )
        for name, why in self.model_failures.items():
            _log.warning("task not loaded", extra={"task": name, "reason": why})
        inference = config.inference
        self.telemetry = Telemetry(
            {
                "gate_ocr": inference.gate_ocr.sla_p99_ms,
                "face_anonymize": inference.face_anonymize.sla_p99_ms,
            }
        )
        self.outbox = Outbox.open(config.outbox.path, config.outbox)
        self.processor = FrameProcessor(
            device_id=config.site.device_id,
            site_id=config.site.site_id,
            tasks=self.tasks,
            outbox=self.outbox,
            tokenizer=tokenizer,
            blobs=self.blobs,
            raw_frames=self.raw_frames,
            sampling=SamplingPolicy(config.sampling),
            telemetry=self.telemetry,
            keep_raw_frames=privacy.keep_raw_frames,
            publish=self._publish,
        )
        self._accepting = True
        self._consumers = [
            asyncio.create_task(self._consume(), name=f"consumer-{i}") for i in range(_CONSUMERS)
        ]
        sources = config.sources
        if sources.spool_dir is not None:
            self.spool = SpoolWatcher(
                Path(sources.spool_dir),
                self.camera_ids,
                self.queue_frame,
                receipts=self.outbox,
                max_bytes=config.local_api.max_frame_bytes,
                poll_s=sources.spool_poll_s,
                reduction=self.processor.jpeg_reduction,
                room=self.queues.room,
                retry_initial_s=sources.spool_retry_initial_s,
                retry_max_s=sources.spool_retry_max_s,
            )
            self._supervise(self.spool.run, "spool")
        for camera in sources.cameras:
            if camera.synthetic_fps > 0:
                self._supervise(
                    functools.partial(
                        self._synthetic, camera.id, camera.synthetic_seed, camera.synthetic_fps
                    ),
                    f"synthetic-{camera.id}",
                )
        self._supervise(self._telemetry_loop, "telemetry")
        self._supervise(self._retention_loop, "retention")
        await self._start_sync()
        await self._start_api()
        _log.info(
            "appliance started",
            extra={"tasks": sorted(self.tasks), "cameras": sorted(self.camera_ids)},
        )

    async def _start_sync(self) -> None:
        """Start the sync engine when the cloud is configured (else the outbox just fills)."""
        sync = self.config.sync
        if sync.cloud_url is None or sync.token is None or self.outbox is None:
            return
        self.sync_engine = SyncEngine(
            self.outbox,
            sync,
            device_id=self.config.site.device_id,
            site_id=self.config.site.site_id,
            blob_source=self.raw_frames,
            state_path=self.data_dir / "sync-state.json",
            models=self._model_inventory,
        )
        await self.sync_engine.start()

    async def _start_api(self) -> None:
        api = self.config.local_api
        app = build_app(
            self,
            token=api.technician_token,
            max_frame_bytes=api.max_frame_bytes,
            frame_metadata_keys=api.frame_metadata_keys,
        )
        if self.sync_engine is not None:
            add_sync_routes(app, self.sync_engine)
        self._runner = ApiRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site: web.BaseSite
        if api.unix_socket:
            site = web.UnixSite(self._runner, api.unix_socket)
        else:
            site = web.TCPSite(self._runner, api.host, api.port)
        await site.start()
        if api.unix_socket:
            self.api_url = f"unix:{api.unix_socket}"
        else:
            host, port = self._runner.addresses[0][:2]
            self.api_url = f"http://{host}:{port}"

    async def stop(self) -> None:
        """Stop sources and the API, drain queued + in-flight frames, close the outbox."""
        self._accepting = False
        if self._runner is not None:
            await self._runner.cleanup()
        await self.supervisor.stop()
        deadline = time.monotonic() + _DRAIN_TIMEOUT_S
        while (self.queues.total_depth() or self._in_flight) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in self._consumers:
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)
        await asyncio.to_thread(self.processor.close)
        if self.sync_engine is not None:
            await self.sync_engine.close()
        if self.outbox is not None:
            await self.outbox.close()
        _log.info("appliance stopped", extra={"left_in_queue": self.queues.total_depth()})

    def _supervise(self, factory: Callable[[], Awaitable[None]], name: str) -> None:
        """Keep a long-running task alive: restarted with a backoff when it fails."""
        self.supervisor.start(name, factory)

    # ------------------------------------------------------------------ frames

    @property
    def accepting(self) -> bool:
        """False once ``stop`` began: the API answers 503 to new frames."""
        return self._accepting

    def _on_drop(self, frame: Frame) -> None:
        self.metrics.dropped.labels(frame.camera_id).inc()
        if self.spool is not None:
            self.spool.forget(frame)

    async def queue_frame(self, frame: Frame) -> None:
        self.metrics.frames.labels(frame.camera_id).inc()
        await self.queues.put(frame)

    async def submit_frame(
        self,
        camera_id: str,
        data: bytes,
        content_type: str | None,
        metadata: dict[str, MetadataValue],
    ) -> int:
        """Local API entry: decode (off the loop), queue; returns the camera's queue depth."""
        if not self._accepting:
            raise BadFrame("the appliance is shutting down")
        try:
            frame = await asyncio.to_thread(
                decode_frame,
                camera_id,
                data,
                content_type,
                max_bytes=self.config.local_api.max_frame_bytes,
                metadata=metadata,
                reduction=self.processor.jpeg_reduction,
            )
        except Exception as exc:
            self.metrics.bad.labels(type(exc).__name__).inc()
            self.telemetry.bad_frames[camera_id] += 1
            raise
        await self.queue_frame(frame)
        return self.queues.depths().get(camera_id, 0)

    async def _consume(self) -> None:
        while True:
            frame = await self.queues.get()
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
            await self.processor.process(
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
        self.telemetry.spool_refused[(camera, reason)] += 1
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
            self.telemetry.spool_retries[(camera, reason)] += 1
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
        self.telemetry.frames_not_stored[(camera, reason)] += 1
        self.metrics.not_stored.labels(camera, reason).inc()
        _log.error(
            "frame from %s lost after it was queued: its results could not all be stored: %s",
            camera,
            summary,
            exc_info=unexpected,
            extra={"camera": camera, "reason": reason, "source": frame.source},
        )

    async def _synthetic(self, camera_id: str, seed: int, fps: float) -> None:
        camera = SyntheticYardCamera(seed)
        index = 0
        while True:
            encoded = await asyncio.to_thread(_encode_synthetic, camera, index)
            frame = await asyncio.to_thread(
                decode_frame,
                camera_id,
                encoded,
                "image/jpeg",
                max_bytes=self.config.local_api.max_frame_bytes,
                source="synthetic",
                reduction=self.processor.jpeg_reduction,
            )
            await self.queue_frame(frame)
            index += 1
            await asyncio.sleep(1.0 / fps)

    # ------------------------------------------------------------------ loops

    async def _telemetry_loop(self) -> None:
        config = self.config
        while True:
            await asyncio.sleep(config.telemetry.interval_s)
            assert self.outbox is not None
            extra = {
                "dropped_frames": dict(self.queues.dropped),
                "queue_depths": self.queues.depths(),
            }
            payload = self.telemetry.record(config.site.device_id, config.site.site_id, extra)
            await self.outbox.append(OutboxClass.TELEMETRY, payload)

    async def _retention_loop(self) -> None:
        while True:
            shredded = await asyncio.to_thread(self.blobs.sweep, self.config.privacy.retention_days)
            if shredded:
                _log.info("retention: days shredded", extra={"days": shredded})
            await asyncio.sleep(3600.0)

    # ------------------------------------------------------------------ API backend

    def _model_inventory(self) -> list[ModelInfo]:
        loaded = [
            ModelInfo(name=t.model_name, version=t.model_version) for t in self.tasks.values()
        ]
        failed = [
            ModelInfo(name=name, version="unloaded", healthy=False) for name in self.model_failures
        ]
        return loaded + failed

    def _publish(self, event: dict[str, Any]) -> None:
        if self.sync_engine is not None:
            self.sync_engine.notify()
        latency = event.get("latency_ms")
        if isinstance(latency, float | int):
            self.metrics.latency.labels(str(event.get("task"))).observe(float(latency))
        for queue in list(self._subscribers):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=256)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(queue)

    def _failure_counters(self) -> list[CounterSource]:
        """What ``/v1/status`` counts of the spool and the pipeline, also on ``/metrics``
        (read at each scrape: ``start`` replaces the telemetry)."""
        return [
            CounterSource(
                "yardlink_spool_refused",
                "spool frames the outbox refused for good (moved to failed/)",
                ("camera", "reason"),
                lambda: self.telemetry.spool_refused,
            ),
            CounterSource(
                "yardlink_spool_retries",
                "spool frames the outbox refused for now (read again after a wait)",
                ("camera", "reason"),
                lambda: self.telemetry.spool_retries,
            ),
            CounterSource(
                "yardlink_spool_bad_files",
                "spool entries that are not frames (moved to failed/ unread)",
                ("camera",),
                lambda: {} if self.spool is None else self.spool.bad_files,
            ),
            CounterSource(
                "yardlink_sample_store_errors",
                "sampled blurred copies that could not be stored",
                ("camera",),
                lambda: self.telemetry.sample_store_errors,
            ),
        ]

    def status(self) -> dict[str, Any]:
        uptime = max(1e-6, time.time() - self.started_at)
        snapshot = self.telemetry.snapshot()
        tasks = snapshot["tasks"]
        assert isinstance(tasks, dict)
        for name, entry in tasks.items():
            entry["rate_per_s"] = round(self.telemetry.results[name] / uptime, 3)
            entry["last_error"] = self.telemetry.task_last_error.get(name)
        outbox = {} if self.outbox is None else outbox_status(self.outbox.stats())
        disk = shutil.disk_usage(self.data_dir)
        return {
            "device_id": self.config.site.device_id,
            "uptime_s": round(uptime, 1),
            "tasks": tasks,
            "models": {"loaded": sorted(self.tasks), "failed": dict(self.model_failures)},
            "frames": snapshot["frames"],
            "bad_frames": snapshot["bad_frames"],
            "raw_store_errors": snapshot["raw_store_errors"],  # originals not kept, per camera
            "sample_store_errors": snapshot["sample_store_errors"],  # samples not stored
            # queued frames lost because the outbox refused their results: camera -> reason -> n
            "frames_not_stored": snapshot["frames_not_stored"],
            "spool": None
            if self.spool is None
            else {
                **self.spool.status(),
                "retries": snapshot["spool_retries"],  # camera -> reason -> refusals for now
                "refused": snapshot["spool_refused"],  # ... for good: files moved to failed/
            },
            "dropped_frames": dict(self.queues.dropped),
            "queue_depths": self.queues.depths(),
            "outbox": outbox,
            "supervised": self.supervisor.status(),  # background tasks: state, last error
            "raw_frames_indexed": len(self.raw_frames),
            "disk": {
                "free_bytes": disk.free,
                "total_bytes": disk.total,
                "blob_bytes": self.blobs.disk_bytes(),
            },
            "sync": None
            if self.sync_engine is None
            else self.sync_engine.progress().model_dump(mode="json"),
        }


def _encode_synthetic(camera: SyntheticYardCamera, index: int) -> bytes:
    return camera.frame(index).encode()


async def run_daemon(config: SiteConfig) -> None:
    """Run until SIGTERM/SIGINT, then drain and stop."""
    daemon = Daemon(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await daemon.start()
    print(json.dumps({"ready": True, "api": daemon.api_url}), flush=True)
    await stop.wait()
    await daemon.stop()
