"""A frame a task failed on cannot be checked, so it never leaves: not as a sample
(the pipeline ships none while its redaction is incomplete) and not on a raw request,
even when the task fails again when the boxes are found anew."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.privacy.blobstore import BlobStore
from appliance.privacy.raw_frames import KeptFrame, RawFrames
from sync.protocol import RawRequest


class TaskFailed(RuntimeError):
    pass


async def test_a_raw_request_for_a_frame_the_detector_fails_on_sends_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = BlobStore(tmp_path / "blobs", tmp_path / "keys")
    image = np.full((120, 160, 3), 200, np.uint8)
    ok, original = cv2.imencode(".png", image)
    assert ok
    now = time.time()
    stored = store.put(original.tobytes(), now)

    def failing_detect(frame: np.ndarray) -> tuple[tuple[int, int, int, int], ...]:
        raise TaskFailed("gate_ocr: the model runtime crashed on this frame")

    frames = RawFrames(
        store, tmp_path / "raw-index.jsonl", tmp_path / "uploads", detect=failing_detect
    )
    frames.keep(KeptFrame((3,), stored.sha256, now, "gate-in", (), False))
    with caplog.at_level(logging.WARNING, logger="appliance.privacy.raw_frames"):
        refs = await frames.resolve_raw_request(RawRequest(request_id="rr-1", seq=3))
    assert refs == []
    assert not list((tmp_path / "uploads").glob("*"))
    assert "a PII task failed on it" in caplog.text
