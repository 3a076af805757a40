"""A ``FrameProcessor`` on a real outbox and blob store in a test's directory, with
what a pipeline test does not look at switched off (no sampling, originals not kept)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from appliance.config import SamplingSettings
from appliance.pipeline import FrameProcessor
from appliance.privacy.blobstore import BlobStore
from appliance.privacy.raw_frames import RawFrames
from appliance.privacy.tokens import PlateTokenizer
from appliance.sampling import SamplingPolicy
from appliance.sources.frames import Frame, decode_frame
from appliance.sources.synthetic import SyntheticYardCamera
from appliance.telemetry import Telemetry
from sync.outbox import Outbox
from sync.settings import OutboxSettings

__all__ = ["open_outbox", "pipeline", "synthetic_frame"]


@asynccontextmanager
async def open_outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    """A real outbox under ``tmp_path`` (no free-disk floor), closed after."""
    opened = Outbox.open(tmp_path / "outbox", OutboxSettings(min_free_disk_bytes=0))
    try:
        yield opened
    finally:
        await opened.close()


def pipeline(
    tmp_path: Path, outbox: Outbox, tasks: dict[str, Any], **overrides: Any
) -> FrameProcessor:
    """``FrameProcessor`` for ``tasks``; ``overrides`` replace any of its arguments."""
    blobs = BlobStore(tmp_path / "blobs", tmp_path / "keys")
    arguments: dict[str, Any] = {
        "device_id": "gate-01",
        "site_id": "yard",
        "tasks": tasks,
        "outbox": outbox,
        "tokenizer": PlateTokenizer(b"k" * 32),
        "blobs": blobs,
        "raw_frames": RawFrames(blobs, tmp_path / "raw-index.jsonl", tmp_path / "uploads"),
        "sampling": SamplingPolicy(SamplingSettings(every_n_frames=0, low_confidence_every_n=0)),
        "telemetry": Telemetry({}),
        "keep_raw_frames": False,
    }
    return FrameProcessor(**{**arguments, **overrides})


def synthetic_frame(camera: str = "gate-in") -> Frame:
    """The synthetic camera's first frame, decoded as the door decodes it."""
    jpeg = SyntheticYardCamera(2).frame(0).encode()
    return decode_frame(camera, jpeg, "image/jpeg", max_bytes=1 << 24)
