"""The appliance daemon: its parts' lifecycle, from a ``SiteConfig``.

``Daemon.start()`` builds the parts in order (``appliance.builder`` knows how):
data directory, plate key, blob store, inference tasks (through an injectable
loader, off the event loop), kept-frame index, outbox, pipeline, frame intake
(``appliance.intake``) and its consumers, the supervised tasks
(``appliance.supervisor``: the spool watcher, synthetic demo cameras, telemetry
and retention), the sync engine, then the local API (``appliance.api_server``),
and sets ``readiness``.  ``Daemon.stop()`` stops accepting frames, closes the
API, drains the queued and in-flight frames into the outbox, awaits every task
and closes the outbox; it is safe at any point of ``start`` (after a failure
there) and before it.  ``run_daemon`` wires SIGTERM/SIGINT to ``stop``.

Task results reach the SSE endpoint, the metrics and the sync engine through the
event bus (``appliance.event_bus``); ``status_model()`` is the typed
``ApplianceStatus`` (``appliance.status``) that ``GET /v1/status`` serves.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from appliance.api_server import ApiServer
from appliance.builder import ApplianceBuilder, TaskLoader
from appliance.config import SiteConfig
from appliance.errors import ApplianceError
from appliance.event_bus import Event, EventBus
from appliance.handover import DataDirClaim, DataDirLock, StandbyAbandoned
from appliance.inference.task_registry import TaskRegistry
from appliance.inference.tasks import TASKS, InferenceTask
from appliance.intake import DRAIN_TIMEOUT_S, FrameIntake
from appliance.metrics import DaemonMetrics
from appliance.pipeline import FrameProcessor
from appliance.privacy.blobstore import BlobStore
from appliance.privacy.raw_frames import RawFrames
from appliance.readiness import Readiness
from appliance.sources.frame_metadata import MetadataValue
from appliance.sources.frames import Frame
from appliance.sources.push_spool import PushAnswer
from appliance.sources.queues import CameraQueues
from appliance.sources.spool import SpoolWatcher
from appliance.status import ApplianceStatus
from appliance.status_report import failure_counters, status_of
from appliance.supervisor import Supervisor
from appliance.systemd import SystemdNotifier, readiness_listener
from appliance.updates.service import ModelUpdates
from appliance.updates.wiring import assignment_transport, start_model_updates
from sync.engine import SyncEngine
from sync.outbox import Outbox
from sync.protocol import ModelInfo, Stream
from sync.shared.durable_file import make_directory_durably
from sync.transport import connect_cloud

__all__ = ["Daemon", "NotStarted", "run_daemon"]

_log = logging.getLogger(__name__)

T = TypeVar("T")
RETENTION_SWEEP_S = 3600.0  # how often expired days of kept frames are shredded


class NotStarted(ApplianceError):
    """A part of the daemon that exists only once ``start`` built it was asked for."""


class Daemon:
    def __init__(
        self,
        config: SiteConfig,
        *,
        supervisor: Supervisor | None = None,
        task_registry: TaskRegistry = TASKS,
        task_loader: TaskLoader | None = None,
        claim_data_dir: Callable[[str | None], Awaitable[None]] | None = None,
    ) -> None:
        """``task_registry``: the tasks this daemon knows (default: the product's);
        ``task_loader``: how they are loaded (default: the registry's own loader);
        ``claim_data_dir``: awaited once the models are loaded, before anything in the
        data dir is opened, with why they would not make it ready (``run_daemon``: the
        data dir's lock, or a standby wait for it: ``appliance.handover``)."""
        self.config = config
        self._claim_data_dir = claim_data_dir
        self.builder = ApplianceBuilder(
            config, task_registry=task_registry, task_loader=task_loader
        )
        self.data_dir = self.builder.data_dir
        self.camera_ids = {camera.id for camera in config.sources.cameras}
        self.supervisor = supervisor or Supervisor()
        self.readiness = Readiness()
        self.events = EventBus()
        self.queues = CameraQueues(config.sources.queue_bound, on_drop=self._on_drop)
        self.metrics = DaemonMetrics(
            lambda: self.queues.total_depth(),
            lambda: None if self.outbox is None else self.outbox.stats(),
            lambda: None if self.sync_engine is None else self.sync_engine.progress(),
        )
        self.registry = self.metrics.registry
        self.telemetry = self.builder.telemetry()
        self.registry.register(failure_counters(self.telemetry, lambda: self.spool))
        self.events.add_listener(self._observe_latency)
        self.tasks: dict[str, InferenceTask] = {}
        self.model_failures: dict[str, str] = {}
        # built by start(), in this order; None until then (stop() closes what exists)
        self._blobs: BlobStore | None = None
        self._raw_frames: RawFrames | None = None
        self.outbox: Outbox | None = None
        self._processor: FrameProcessor | None = None
        self.intake: FrameIntake | None = None
        self.spool: SpoolWatcher | None = None
        self.sync_engine: SyncEngine | None = None
        self.updates: ModelUpdates | None = None  # model OTA, when [updates] has a keyring
        self._api = ApiServer()
        self.started_at = time.time()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        build = self.builder
        # the models first: the slow part, and it touches nothing in the data dir (a
        # standby start loads them while the previous process still serves)
        self.tasks, self.model_failures = await build.load_tasks()
        for name, why in self.model_failures.items():
            _log.warning("task not loaded", extra={"task": name, "reason": why})
        await asyncio.to_thread(make_directory_durably, self.data_dir)
        if self._claim_data_dir is not None:
            await self._claim_data_dir(
                build.readiness_problem(self.model_failures, outbox_open=True)
            )
        tokenizer = build.plate_tokenizer()
        self._blobs = build.blob_store()
        self._raw_frames = build.raw_frames(self._blobs, self.tasks)
        self.outbox = build.open_outbox()
        self._processor = build.frame_processor(
            tasks=self.tasks,
            outbox=self.outbox,
            tokenizer=tokenizer,
            blobs=self._blobs,
            raw_frames=self._raw_frames,
            telemetry=self.telemetry,
            publish=self.events.publish,
        )
        self.updates = await start_model_updates(  # serving releases in place before any frame
            self.config,
            outbox=self.outbox,
            processor=self._processor,
            tasks=self.tasks,
            registry=build.task_registry,
            backlog=self.queues.total_depth,  # the shadow window yields to queued frames
        )
        self.intake = FrameIntake(
            self._processor,
            self.queues,
            telemetry=self.telemetry,
            metrics=self.metrics,
            max_frame_bytes=self.config.local_api.max_frame_bytes,
            push_mode=self.config.local_api.push_mode,
        )
        self.intake.start()
        self._start_sources(self.intake, self.outbox, self._processor)
        self._supervise(self._telemetry_loop, "telemetry")
        self._supervise(self._retention_loop, "retention")
        transport = (
            connect_cloud
            if self.updates is None
            else assignment_transport(self.updates, self.outbox, self._supervise)
        )
        self.sync_engine = build.sync_engine(
            self.outbox, self._raw_frames, self._model_inventory, transport
        )
        if self.sync_engine is not None:
            self.events.add_listener(_wake(self.sync_engine))
            await self.sync_engine.start()
        await self._api.start(self)
        self.refresh_readiness()
        _log.info(
            "appliance started",
            extra={"tasks": sorted(self.tasks), "cameras": sorted(self.camera_ids)},
        )

    def _start_sources(
        self, intake: FrameIntake, outbox: Outbox, processor: FrameProcessor
    ) -> None:
        """The spool watcher and the synthetic demo cameras, supervised."""
        self.spool = self.builder.spool_watcher(
            intake.queue_frame, outbox, processor, self.queues.room
        )
        if self.spool is not None:
            intake.spool = self.spool
            self._supervise(self.spool.run, "spool")
        for camera in self.config.sources.cameras:
            if camera.synthetic_fps > 0:
                self._supervise(
                    functools.partial(
                        intake.synthetic_camera,
                        camera.id,
                        camera.synthetic_seed,
                        camera.synthetic_fps,
                    ),
                    f"synthetic-{camera.id}",
                )

    def refresh_readiness(self) -> None:
        """Decide readiness again from the loaded tasks and the outbox (at start, and
        after anything that changes them: a model update that loads a missing task)."""
        problem = self.builder.readiness_problem(
            self.model_failures, outbox_open=self.outbox is not None
        )
        self.readiness.set(problem)
        if problem is not None:
            _log.error("appliance not ready: %s", problem, extra={"reason": problem})

    async def stop(self, *, handing_over: bool = False) -> None:
        """Stop sources and the API, drain queued + in-flight frames, close the outbox.
        Safe at any point of ``start`` (each part is closed only if it was built).
        ``handing_over``: a standby takes over; with durable push every pushed frame is
        in the spool, so it is left there for the successor instead of drained here."""
        self.readiness.stopping()
        if self.intake is not None:
            self.intake.accepting = False
        await self._api.stop()
        await self.supervisor.stop()
        if self.updates is not None:
            await self.updates.close()
        if self.intake is not None:
            quick = handing_over and self.config.local_api.push_mode == "durable"
            await self.intake.drain(0.0 if quick else DRAIN_TIMEOUT_S)
        if self._processor is not None:
            await asyncio.to_thread(self._processor.close)
        if self.sync_engine is not None:
            await self.sync_engine.close()
        if self.outbox is not None:
            await self.outbox.close()
        _log.info("appliance stopped", extra={"left_in_queue": self.queues.total_depth()})

    def _supervise(self, factory: Callable[[], Awaitable[None]], name: str) -> None:
        """Keep a long-running task alive: restarted with a backoff when it fails."""
        self.supervisor.start(name, factory)

    # ------------------------------------------------------------------ parts built by start

    @property
    def api_url(self) -> str:
        """http://host:port or unix:/path, once the API listens ("" before)."""
        return self._api.url

    @property
    def blobs(self) -> BlobStore:
        return _started(self._blobs, "blob store")

    @property
    def raw_frames(self) -> RawFrames:
        return _started(self._raw_frames, "kept-frame index")

    @property
    def processor(self) -> FrameProcessor:
        return _started(self._processor, "frame processor")

    # ------------------------------------------------------------------ frames (API backend)

    @property
    def accepting(self) -> bool:
        """False before start and once ``stop`` began: the API answers 503 to new frames."""
        return self.intake is not None and self.intake.accepting

    def _on_drop(self, frame: Frame) -> None:
        self.metrics.dropped.labels(frame.camera_id).inc()
        if self.spool is not None:
            self.spool.forget(frame)

    async def queue_frame(self, frame: Frame) -> None:
        """Queue a decoded frame for its camera (as the spool and demo cameras do)."""
        await _started(self.intake, "frame intake").queue_frame(frame)

    async def submit_frame(
        self,
        camera_id: str,
        data: bytes,
        content_type: str | None,
        metadata: dict[str, MetadataValue],
    ) -> PushAnswer:
        """Local API entry: decode (off the loop), then spool (201) or queue (202)."""
        return await _started(self.intake, "frame intake").submit_frame(
            camera_id, data, content_type, metadata
        )

    def subscribe(self) -> asyncio.Queue[Event]:
        return self.events.subscribe()

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self.events.unsubscribe(queue)

    def _observe_latency(self, event: Event) -> None:
        latency = event.get("latency_ms")
        if isinstance(latency, float | int):
            self.metrics.latency.labels(str(event.get("task"))).observe(float(latency) / 1000)

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
            await self.outbox.append(Stream.TELEMETRY, payload)

    async def _retention_loop(self) -> None:
        while True:
            shredded = await asyncio.to_thread(self.blobs.sweep, self.config.privacy.retention_days)
            if shredded:
                _log.info("retention: days shredded", extra={"days": shredded})
            await asyncio.sleep(RETENTION_SWEEP_S)

    # ------------------------------------------------------------------ status

    def _model_inventory(self) -> list[ModelInfo]:
        if self.updates is not None:  # with the release serving and the last update outcome
            loaded = self.updates.inventory()
        else:
            loaded = [
                ModelInfo(name=t.model_name, version=t.model_version) for t in self.tasks.values()
            ]
        failed = [
            ModelInfo(name=name, version="unloaded", healthy=False) for name in self.model_failures
        ]
        return loaded + failed

    def status_model(self) -> ApplianceStatus:
        """What ``GET /v1/status`` serves and the TUI reads."""
        return status_of(self)

    def status(self) -> dict[str, Any]:
        """``status_model()`` as JSON values."""
        return self.status_model().model_dump(mode="json")


def _started(part: T | None, what: str) -> T:
    if part is None:
        raise NotStarted(f"the daemon's {what} exists only once start() built it")
    return part


def _wake(engine: SyncEngine) -> Callable[[Event], None]:
    """A bus listener that tells the sync engine something was appended."""
    return lambda event: engine.notify()


async def run_daemon(config: SiteConfig, *, standby: bool = False) -> None:
    """Run until SIGTERM/SIGINT (or SIGUSR2: hand over to a standby), then drain and
    stop.  The first stdout line says whether the appliance is ready (and why not):
    ``{"ready": ..., "api": ..., "reason": ...}``.  ``standby``: load the models, then
    wait for the running appliance to hand the data dir over (``appliance.handover``)."""
    stop = asyncio.Event()
    handing_over = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def hand_over() -> None:
        handing_over.set()
        stop.set()

    loop.add_signal_handler(signal.SIGUSR2, hand_over)
    notifier = SystemdNotifier()  # READY=1 / STATUS / WATCHDOG=1 under systemd, else no-op
    lock = DataDirLock(Path(config.site.data_dir))
    claim = DataDirClaim(lock, standby=standby, stop_requested=stop, tell_status=notifier.status)
    daemon = Daemon(config, claim_data_dir=claim)
    daemon.readiness.on_change(readiness_listener(notifier))
    watchdog = asyncio.create_task(notifier.watchdog_loop(), name="systemd-watchdog")
    try:
        await daemon.start()
    except BaseException as exc:
        watchdog.cancel()
        await daemon.stop()  # close what start opened (the outbox first of all)
        lock.release()
        if isinstance(exc, StandbyAbandoned):
            _log.info("standby stopped before taking over")
            return
        raise
    line: dict[str, Any] = {"ready": daemon.readiness.ready, "api": daemon.api_url}
    if not daemon.readiness.ready:
        line["reason"] = daemon.readiness.reason
    print(json.dumps(line), flush=True)
    await stop.wait()
    await daemon.stop(handing_over=handing_over.is_set())
    lock.release()  # the outbox is closed: a standby may open it now
    watchdog.cancel()
    await asyncio.gather(watchdog, return_exceptions=True)
