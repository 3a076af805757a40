"""Model updates in the daemon: built from ``[updates]`` once the pipeline exists."""

from __future__ import annotations

import logging
from pathlib import Path

from appliance.audit import AuditTrail
from appliance.config import SiteConfig
from appliance.errors import ModelLoadError
from appliance.inference.results import InferenceTask
from appliance.inference.task_registry import TaskRegistry
from appliance.pipeline import FrameProcessor
from appliance.updates.agent import UpdateAgent
from appliance.updates.errors import ReleaseError
from appliance.updates.service import ModelUpdates
from appliance.updates.slot_store import SlotStore
from sync.outbox import Outbox
from sync.shared.signing import Envelope, Keyring, VerificationError

__all__ = ["load_keyring", "start_model_updates"]

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
    )
    await updates.start()
    return updates
