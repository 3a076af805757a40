"""The sync engine's small durable state: one JSON file, written crash-safely.

What lives here (everything else is in the outbox):

* ``uploads``: tus upload paths by blob sha256, so a restart resumes an
  upload where it stopped instead of starting again;
* ``raw_requests``: cloud raw requests already queued (so a handshake that
  repeats them does not queue them twice), with the blobs still to deliver;
  ``delivered`` / ``unknown``: request ids to report in the next handshake;
* ``conflicts``: batches the cloud answered 409 for (held, never acked);
* ``sent_today``: bytes per class in the current UTC day (daily budgets).

Writes go through ``sync.shared.durable_file.replace_durably`` (CONVENTIONS 7), so the
file is always either old or new.  A write that fails (a full disk) raises
:class:`StateFileError` and keeps the old file; a file that cannot be read (not
JSON, not UTF-8, not this schema) is moved aside to ``*.corrupt`` and the engine
starts from an empty state.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sync.errors import StateFileError
from sync.protocol import Stream
from sync.shared.durable_file import replace_durably

__all__ = ["ConflictRecord", "EngineState", "EngineStateFile", "StateFileError"]

log = logging.getLogger(__name__)


class ConflictRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stream: Stream
    first_seq: int
    last_seq: int
    batch_id: str
    detail: str


class EngineState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    uploads: dict[str, str] = Field(default_factory=dict)  # sha256 -> upload path
    raw_requests: dict[str, int] = Field(default_factory=dict)  # request id -> blobs left
    delivered: list[str] = Field(default_factory=list)
    unknown: list[str] = Field(default_factory=list)
    conflicts: list[ConflictRecord] = Field(default_factory=list)
    day: int = -1
    sent_today: dict[Stream, int] = Field(default_factory=dict)


class EngineStateFile:
    """Load once, mutate ``state``, call ``save()`` after each change that must survive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = self._load()

    def _load(self) -> EngineState:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return EngineState()
        try:
            return EngineState.model_validate_json(data)  # bytes: not UTF-8 is a ValidationError
        except ValidationError:
            # Losing this file costs re-sending a partial upload, never data.
            broken = self.path.with_suffix(".corrupt")
            os.replace(self.path, broken)
            log.exception("sync state %s unreadable; moved to %s", self.path, broken)
            return EngineState()

    def save(self) -> None:
        """Replace the file with ``state``; raises :class:`StateFileError`, old file kept."""
        data = json.dumps(self.state.model_dump(mode="json"), separators=(",", ":")).encode()
        try:
            replace_durably(self.path, data)
        except OSError as exc:
            raise StateFileError(
                f"could not save sync state {self.path} ({exc}); the previous state is kept"
            ) from exc

    # ------------------------------------------------------------------ upload URLs

    def upload_path(self, sha256: str) -> str | None:
        return self.state.uploads.get(sha256)

    def remember_upload(self, sha256: str, path: str) -> None:
        self.state.uploads[sha256] = path
        self.save()

    def forget_upload(self, sha256: str) -> None:
        if self.state.uploads.pop(sha256, None) is not None:
            self.save()
