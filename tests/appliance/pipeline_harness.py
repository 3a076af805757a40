"""A ``FrameProcessor`` on a real outbox (the ``outbox`` fixture, tests/appliance/conftest.py)
and blob store in a test's directory, with what a pipeline test does not look at switched
off (no sampling, originals not kept)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import SamplingSettings
from appliance.inference.frame_check import require_bgr_frame
from appliance.inference.results import TaskResult
from appliance.pipeline import FrameProcessor
from appliance.privacy.blobstore import BlobStore
from appliance.privacy.raw_frames import RawFrames
from appliance.privacy.tokens import PlateTokenizer
from appliance.sampling import SamplingPolicy
from appliance.sources.frames import Frame, decode_frame
from appliance.sources.synthetic import SyntheticYardCamera
from appliance.telemetry import Telemetry
from sync.outbox import Outbox

__all__ = ["HeldTask", "pipeline", "synthetic_frame"]


class HeldTask:
    """Holds its first frame until ``release`` is set (a new scene's slow read)."""

    name = "held_reader"
    model_name = "held"
    model_version = "1"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.runs = 0

    def run(self, image_bgr: np.ndarray[Any, Any]) -> TaskResult:
        require_bgr_frame(image_bgr)
        self.runs += 1
        if self.runs == 1:
            self.release.wait(30.0)
        return TaskResult(self.name, self.model_name, self.model_version, [], 0.0)


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
