"""The updates directory on disk: ``state.json``, ``floor.json`` and the slot folders.

<root>/state.json            UpdateState (slot_state.py), replaced durably
<root>/floor.json            the TimeFloor: highest signed time seen
<root>/<task>/<a|b>/         an extracted release + manifest.json (its signed envelope)
<root>/downloads/            artifacts being downloaded (resumable)
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from appliance.updates.slot_state import SlotName, UpdateState
from sync.protocol.releases import ReleaseManifest
from sync.shared.durable_file import fsync_directory, replace_durably
from sync.shared.signing import (
    BadEnvelope,
    Envelope,
    Keyring,
    TimeFloor,
    VerificationError,
    verify_file,
)

__all__ = ["MANIFEST_FILE", "SlotStore"]

MANIFEST_FILE = "manifest.json"
_log = logging.getLogger(__name__)


class SlotStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_path = root / "state.json"
        self.floor_path = root / "floor.json"
        self.downloads = root / "downloads"
        self.keyring_path = root / "keyring.json"  # a rotated keyring, once one was applied

    # ------------------------------------------------------------------ state

    def load_state(self) -> UpdateState:
        """The durable state; a missing file is a fresh device.  An unreadable one is
        kept aside as ``state.json.bad`` and the pinned models serve (logged)."""
        try:
            data = self.state_path.read_bytes()
        except FileNotFoundError:
            return UpdateState()
        try:
            return UpdateState.model_validate_json(data)
        except ValueError as exc:
            bad = self.state_path.with_name("state.json.bad")
            self.state_path.replace(bad)
            fsync_directory(self.root)
            _log.error(
                "unreadable %s kept as %s, serving pinned models: %s", self.state_path, bad, exc
            )
            return UpdateState()

    def save_state(self, state: UpdateState) -> None:
        replace_durably(self.state_path, state.model_dump_json(indent=1).encode())

    def load_floor(self, initial: int) -> TimeFloor:
        """The floor, never below ``initial`` (the keyring's signed issue time)."""
        try:
            floor = TimeFloor.from_json(json.loads(self.floor_path.read_bytes()))
        except FileNotFoundError:
            floor = TimeFloor()
        except ValueError as exc:
            # A damaged floor refuses updates rather than forgetting what was seen.
            raise BadEnvelope(f"{self.floor_path}: {exc}") from exc
        if floor.highest_seen < initial:
            floor = TimeFloor(initial, floor.per_subject)
        return floor

    def save_floor(self, floor: TimeFloor) -> None:
        replace_durably(self.floor_path, json.dumps(floor.to_json(), sort_keys=True).encode())

    def trusted_keyring(self, shipped: Keyring) -> Keyring:
        """The shipped keyring, or the rotated one kept here when its version is higher
        (it was checked against the keyring it replaced when it was applied)."""
        try:
            stored = Keyring.from_envelope(Envelope.parse(self.keyring_path.read_bytes()))
        except FileNotFoundError:
            return shipped
        except (OSError, VerificationError) as exc:
            _log.error(
                "rotated keyring %s unusable, using the shipped one: %s", self.keyring_path, exc
            )
            return shipped
        return stored if stored.version > shipped.version else shipped

    def save_keyring(self, envelope: bytes) -> None:
        replace_durably(self.keyring_path, envelope)

    # ------------------------------------------------------------------ slots

    def slot_dir(self, task: str, slot: SlotName) -> Path:
        return self.root / task / slot

    def wipe(self, task: str, slot: SlotName) -> Path:
        """Remove whatever is in the slot (durably) and return its empty directory."""
        directory = self.slot_dir(task, slot)
        if directory.exists():
            shutil.rmtree(directory)
            fsync_directory(directory.parent)
        directory.mkdir(parents=True)
        fsync_directory(directory.parent)
        return directory

    def seal(self, task: str, slot: SlotName, envelope: bytes) -> None:
        """Write the signed manifest into the slot and fsync every directory in it."""
        directory = self.slot_dir(task, slot)
        replace_durably(directory / MANIFEST_FILE, envelope)
        for sub in sorted((p for p in directory.rglob("*") if p.is_dir()), reverse=True):
            fsync_directory(sub)
        fsync_directory(directory)

    def manifest(self, task: str, slot: SlotName) -> ReleaseManifest:
        data = (self.slot_dir(task, slot) / MANIFEST_FILE).read_bytes()
        try:
            return ReleaseManifest.model_validate(Envelope.parse(data).signed)
        except ValueError as exc:
            raise BadEnvelope(f"{task}/{slot}: stored manifest unreadable: {exc}") from exc

    def check(self, task: str, slot: SlotName) -> ReleaseManifest:
        """Every file of the slot against the manifest it was verified with at install;
        raises ``VerificationError`` or ``OSError`` when the slot is damaged."""
        manifest = self.manifest(task, slot)
        root = self.slot_dir(task, slot)
        for entry in manifest.files:
            verify_file(root / entry.path, entry.digest(), what=f"{task}/{slot}/{entry.path}")
        return manifest

    def usable(self, task: str, slot: SlotName) -> str | None:
        """None when the slot checks out, else why not."""
        try:
            self.check(task, slot)
        except (OSError, VerificationError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None
