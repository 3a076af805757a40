"""Model updates in the daemon: built from ``[updates]`` once the pipeline exists."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from appliance.audit import AuditTrail
from appliance.config import SiteConfig
from appliance.errors import ModelLoadError
from appliance.inference.results import InferenceTask
from appliance.inference.task_registry import TaskRegistry
from appliance.pipeline import FrameProcessor
from appliance.updates.agent import UpdateAgent
from appliance.updates.assignments import AssignmentRunner, AssignmentTap
from appliance.updates.download import HttpFetcher
from appliance.updates.errors import ReleaseError
from appliance.updates.service import ModelUpdates
from appliance.updates.slot_store import SlotStore
from sync.outbox import Outbox
from sync.protocol import Stream
from sync.scheduler import TokenBucket
from sync.settings import SyncSettings
from sync.shared.signing import Envelope, Keyring, VerificationError
from sync.transport import CloudTransport, TransportFactory, connect_cloud

__all__ = ["assignment_transport", "load_keyring", "start_model_updates"]

METADATA_FIRST_RECORDS = 1_000  # a download waits while more metadata than this is pending

_log = logging.getLogger(__name__)


def load_keyring(path: Path) -> Keyring:
    """A keyring file as shipped (signed by one of its own keys)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReleaseError(f"cannot read keyring {path}: {exc.strerror}") from exc
    return Keyring.from_envelope(Envelope.parse(data))


async def start_model_updates(
    config: SiteConfig,
    *,
    outbox: Outbox,
    processor: FrameProcessor,
    tasks: dict[str, InferenceTask],
    registry: TaskRegistry,
    backlog: Callable[[], int] = lambda: 0,
) -> ModelUpdates | None:
    """Recover the slots and put each task's serving release in place; None when
    ``[updates] keyring_file`` is not set, or the keyring cannot be trusted (logged:
    the pinned or installed models keep serving, only new releases wait)."""
    settings = config.updates
    if settings.keyring_file is None:
        return None
    try:
        keyring = load_keyring(Path(settings.keyring_file))
    except (ReleaseError, VerificationError) as exc:
        _log.error("model updates off: the release keyring is unusable: %s", exc)
        return None
    root = Path(settings.updates_dir or Path(config.site.data_dir) / "updates")
    audit = AuditTrail(outbox, device_id=config.site.device_id, site_id=config.site.site_id)
    agent = UpdateAgent(
        SlotStore(root), keyring, settings=settings, inference=config.inference, audit=audit
    )
    models_dir = Path(config.models_dir)

    def load_pinned(name: str) -> InferenceTask:
        plugin = registry.get(name)
        if plugin is None:
            raise ModelLoadError(f"no task {name!r} is registered")
        task: InferenceTask = plugin.load(plugin.settings(config.inference), models_dir)
        return task

    updates = ModelUpdates(
        agent,
        processor,
        tasks,
        settings=settings,
        inference=config.inference,
        load_pinned=load_pinned,
        backlog=backlog,
    )
    await updates.start()
    return updates


def assignment_transport(
    updates: ModelUpdates,
    outbox: Outbox,
    supervise: Callable[[Callable[[], Awaitable[None]], str], None],
) -> TransportFactory:
    """The sync engine's transport with the cloud's model assignments tapped off: they
    go to an ``AssignmentRunner`` (supervised) that downloads with the engine's own
    bandwidth bucket, pausing while the metadata backlog is large."""

    async def metadata_first() -> None:
        while _metadata_backlog(outbox) > METADATA_FIRST_RECORDS:
            await asyncio.sleep(1.0)

    def factory(settings: SyncSettings, bucket: TokenBucket) -> CloudTransport:
        inner = connect_cloud(settings, bucket)
        assert settings.cloud_url is not None and settings.token is not None  # connect_cloud
        fetcher = HttpFetcher(
            str(settings.cloud_url),
            settings.token.get_secret_value(),
            bucket=bucket,
            gate=metadata_first,
        )
        runner = AssignmentRunner(updates, fetcher)
        supervise(runner.run, "model-assignments")
        return AssignmentTap(inner, runner.offer)

    return factory


def _metadata_backlog(outbox: Outbox) -> int:
    per_class = outbox.stats().per_class
    return sum(per_class[s].records for s in (Stream.CRITICAL, Stream.EVENTS) if s in per_class)
