"""Builds each part of the appliance from the site configuration.

The daemon (``appliance.daemon``) decides when each part is built and closed; this
module only knows how, from ``SiteConfig``.  Inference tasks come from a
``TaskRegistry`` (by default the product's, ``appliance.inference.tasks.TASKS``)
through a ``TaskLoader``: a test or a tool passes its own loader (tasks without
models, say) or its own registry (an extra task), and nothing is monkeypatched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from appliance.config import SiteConfig
from appliance.event_bus import Event
from appliance.inference.settings import InferenceSettings
from appliance.inference.task_registry import LoadedTasks, TaskRegistry
from appliance.inference.tasks import TASKS, InferenceTask
from appliance.pipeline import FrameProcessor
from appliance.privacy.blobstore import BlobStore
from appliance.privacy.raw_frames import RawFrames
from appliance.privacy.redaction import PiiDetector
from appliance.privacy.tokens import PlateTokenizer, load_plate_key
from appliance.readiness import readiness_problem
from appliance.sampling import SamplingPolicy
from appliance.sources.frames import Frame
from appliance.sources.spool import SpoolWatcher
from appliance.telemetry import Telemetry
from sync.engine import SyncEngine
from sync.outbox import Outbox
from sync.protocol import ModelInfo
from sync.transport import TransportFactory, connect_cloud

__all__ = ["ApplianceBuilder", "TaskLoader"]

TaskLoader = Callable[[InferenceSettings, Path], LoadedTasks]  # blocking: run off the loop


class ApplianceBuilder:
    def __init__(
        self,
        config: SiteConfig,
        *,
        task_registry: TaskRegistry = TASKS,
        task_loader: TaskLoader | None = None,
    ) -> None:
        self.config = config
        self.data_dir = Path(config.site.data_dir)
        self.models_dir = Path(config.models_dir)
        self.task_registry = task_registry
        self.task_loader = task_loader or task_registry.load

    def plate_tokenizer(self) -> PlateTokenizer:
        privacy = self.config.privacy
        key_file = Path(privacy.plate_key_file or self.data_dir / "plate.key")
        return PlateTokenizer(load_plate_key(privacy.plate_secret, key_file))

    def blob_store(self) -> BlobStore:
        keys_dir = self.config.privacy.blob_keys_dir or self.data_dir / "blob-keys"
        return BlobStore(self.data_dir / "blobs", Path(keys_dir))

    async def load_tasks(self) -> LoadedTasks:
        """The enabled tasks, loaded off the event loop (sha256, sessions, warm-up)."""
        return await asyncio.to_thread(self.task_loader, self.config.inference, self.models_dir)

    def telemetry(self) -> Telemetry:
        return Telemetry(self.task_registry.slas_ms(self.config.inference))

    def raw_frames(self, blobs: BlobStore, tasks: Mapping[str, InferenceTask]) -> RawFrames:
        detector = PiiDetector(tasks, self.task_registry.redaction_policy())
        return RawFrames(
            blobs,
            self.data_dir / "raw-index.jsonl",
            self.data_dir / "uploads",
            detect=detector.boxes,
        )

    def open_outbox(self) -> Outbox:
        return Outbox.open(self.config.outbox.path, self.config.outbox)

    def frame_processor(
        self,
        *,
        tasks: dict[str, InferenceTask],
        outbox: Outbox,
        tokenizer: PlateTokenizer,
        blobs: BlobStore,
        raw_frames: RawFrames,
        telemetry: Telemetry,
        publish: Callable[[Event], None],
    ) -> FrameProcessor:
        config = self.config
        return FrameProcessor(
            device_id=config.site.device_id,
            site_id=config.site.site_id,
            tasks=tasks,
            outbox=outbox,
            tokenizer=tokenizer,
            blobs=blobs,
            raw_frames=raw_frames,
            sampling=SamplingPolicy(config.sampling),
            telemetry=telemetry,
            keep_raw_frames=config.privacy.keep_raw_frames,
            publish=publish,
            redaction=self.task_registry.redaction_policy(),
        )

    def spool_root(self) -> Path | None:
        """Where the spool is: ``[sources] spool_dir``, else ``<data_dir>/spool`` when
        pushed frames are written there before their answer (``push_mode = "durable"``)."""
        if self.config.sources.spool_dir is not None:
            return Path(self.config.sources.spool_dir)
        if self.config.local_api.push_mode == "durable":
            return self.data_dir / "spool"
        return None

    def spool_watcher(
        self,
        queue_frame: Callable[[Frame], Awaitable[None]],
        outbox: Outbox,
        processor: FrameProcessor,
        room: Callable[[str], int],
    ) -> SpoolWatcher | None:
        """The spool directory's watcher, or None when there is no spool: none configured
        and frames pushed over the local API are only queued (``push_mode = "queued"``)."""
        sources = self.config.sources
        root = self.spool_root()
        if root is None:
            return None
        return SpoolWatcher(
            root,
            {camera.id for camera in sources.cameras},
            queue_frame,
            receipts=outbox,
            max_bytes=self.config.local_api.max_frame_bytes,
            poll_s=sources.spool_poll_s,
            reduction=processor.jpeg_reduction,
            room=room,
            retry_initial_s=sources.spool_retry_initial_s,
            retry_max_s=sources.spool_retry_max_s,
        )

    def sync_engine(
        self,
        outbox: Outbox,
        raw_frames: RawFrames,
        models: Callable[[], list[ModelInfo]],
        transport: TransportFactory = connect_cloud,  # model updates tap assignments off it
    ) -> SyncEngine | None:
        """The sync engine, or None when no cloud is configured (the outbox just fills)."""
        sync = self.config.sync
        if sync.cloud_url is None or sync.token is None:
            return None
        return SyncEngine(
            outbox,
            sync,
            device_id=self.config.site.device_id,
            site_id=self.config.site.site_id,
            blob_source=raw_frames,
            state_path=self.data_dir / "sync-state.json",
            models=models,
            transport=transport,
        )

    def readiness_problem(
        self, failed_tasks: Mapping[str, str], *, outbox_open: bool
    ) -> str | None:
        """Why the appliance is not ready (a required model missing, ...), or None."""
        paths = {
            name: self.task_registry.model_paths(name, self.models_dir) for name in failed_tasks
        }
        return readiness_problem(failed_tasks, paths, outbox_open=outbox_open)
