"""The durable answer to a camera's push: the frame written to the spool before the 201.

``write_pushed_frame`` writes the bytes a camera pushed to
``<spool>/<camera>/push-<ns>-<hex>.<jpg|png>``: a temp file of its own (a name the
spool never reads), fsync'd, renamed, and the camera directory fsync'd; only then
does the local API answer.  From there the frame is the spool's like any dropped
file: processed once (the outbox's receipts), moved to ``processed/`` after its
records are durable, read again after a crash.  The file name is the id the camera
gets back.  Frame metadata (``X-Frame-Metadata``) goes beside it in
``<name>.meta.json``, written durably before the frame, so the spool never reads a
frame without the metadata it was pushed with.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError
from appliance.sources.frame_metadata import MetadataValue
from sync.shared.durable_file import make_directory_durably, replace_durably

__all__ = [
    "METADATA_SUFFIX",
    "PUSHED_PREFIX",
    "PushAnswer",
    "PushNotStored",
    "move_metadata_beside",
    "read_pushed_metadata",
    "write_pushed_frame",
]

METADATA_SUFFIX = ".meta.json"
PUSHED_PREFIX = "push-"


@dataclass(frozen=True, slots=True)
class PushAnswer:
    """The local API's answer to a pushed frame: 201 stored in the spool (``id``: its
    file name), or 202 queued in memory."""

    status: int
    body: dict[str, Any]


class PushNotStored(ApplianceError):
    """The pushed frame could not be written to the spool (disk full, I/O error): it is
    not stored, and the camera should push it again."""

    retryable = True
    http_status = 507
    code = "not_stored"


def pushed_name(kind: str) -> str:
    """A new spool file name for a pushed frame: time-ordered, unique per appliance."""
    suffix = ".png" if kind == "png" else ".jpg"
    return f"{PUSHED_PREFIX}{time.time_ns():020d}-{secrets.token_hex(4)}{suffix}"


def write_pushed_frame(
    spool_root: Path,
    camera_id: str,
    data: bytes,
    kind: str,
    metadata: dict[str, MetadataValue],
) -> str:
    """Write a pushed frame (and its metadata) durably into the camera's spool
    directory; returns its file name.  ``PushNotStored`` when the disk refuses it."""
    directory = spool_root / camera_id
    name = pushed_name(kind)
    try:
        make_directory_durably(directory)
        if metadata:
            replace_durably(directory / (name + METADATA_SUFFIX), json.dumps(metadata).encode())
        replace_durably(directory / name, data)
    except OSError as exc:
        raise PushNotStored(
            f"the frame could not be written to the spool: {exc.strerror or exc}"
        ) from exc
    return name


def read_pushed_metadata(frame_path: Path) -> dict[str, MetadataValue]:
    """The metadata pushed with a spool frame, or {} (a dropped file, or none sent).
    A note that cannot be read as a JSON object is ignored (the frame still counts)."""
    try:
        raw = (frame_path.parent / (frame_path.name + METADATA_SUFFIX)).read_bytes()
    except OSError:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def move_metadata_beside(frame_path: Path, target_dir: Path) -> None:
    """Move a frame's metadata note along with it (before the frame: its rename's
    directory fsyncs make both durable)."""
    note = frame_path.parent / (frame_path.name + METADATA_SUFFIX)
    if note.exists():
        os.replace(note, target_dir / note.name)
