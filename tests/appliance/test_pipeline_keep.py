"""A kept original is indexed as soon as an events record of its frame is durable, not once
every task is done: a crash while the slow task still runs must not leave a record in the
lake whose frame the cloud cannot ask for (found by tests/test_end_to_end.py).  Such an
early index row is marked incomplete: the plates are found again when the frame is asked for."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import SamplingSettings
from appliance.inference.results import Detection, TaskResult
from appliance.inference.tasks import TASKS
from appliance.pipeline import FrameProcessor
from appliance.privacy.blobstore import BlobStore
from appliance.privacy.raw_frames import RawFrames
from appliance.privacy.redaction import PiiDetector
from appliance.privacy.tokens import PlateTokenizer
from appliance.sampling import SamplingPolicy
from appliance.sources.frames import decode_frame
from appliance.sources.synthetic import SyntheticYardCamera
from appliance.telemetry import Telemetry
from sync.outbox import Outbox
from sync.protocol import RawRequest
from sync.settings import OutboxSettings


class FakeTask:
    def __init__(self, name: str, gate: threading.Event | None = None) -> None:
        self.name = name
        self.model_name = f"fake-{name}"
        self.model_version = "1"
        self.gate = gate

    def run(self, image_bgr: np.ndarray[Any, Any]) -> TaskResult:
        if self.gate is not None:
            assert self.gate.wait(30)
        faces = [Detection("face", "", 0.9, None, (10, 10, 40, 40))]
        return TaskResult(self.name, self.model_name, "1", faces if self.gate is None else [], 1.0)


async def test_kept_frame_indexed_before_the_slow_task_is_done(tmp_path: Path) -> None:
    slow_ocr = threading.Event()
    outbox = Outbox.open(tmp_path / "outbox", OutboxSettings(min_free_disk_bytes=0))
    blobs = BlobStore(tmp_path / "blobs", tmp_path / "keys")
    raw = RawFrames(blobs, tmp_path / "raw-index.jsonl", tmp_path / "uploads")
    published: list[dict[str, Any]] = []
    processor = FrameProcessor(
        device_id="gate-01",
        site_id="yard",
        tasks={
            "face_anonymize": FakeTask("face_anonymize"),
            "gate_ocr": FakeTask("gate_ocr", slow_ocr),
        },
        outbox=outbox,
        tokenizer=PlateTokenizer(b"k" * 32),
        blobs=blobs,
        raw_frames=raw,
        sampling=SamplingPolicy(SamplingSettings(every_n_frames=0, low_confidence_every_n=0)),
        telemetry=Telemetry({}),
        keep_raw_frames=True,
        publish=published.append,
    )
    jpeg = SyntheticYardCamera(1).frame(0).encode()
    frame = decode_frame("gate-in", jpeg, "image/jpeg", max_bytes=1 << 24)
    processing = asyncio.create_task(processor.process(frame))
    try:
        refs = []
        for _ in range(200):  # OCR still runs (gated); the face record is durable
            if published:
                # What a restart after a crash now would see: the frame can be requested.
                # Its plates are not known yet (OCR still runs), so they are found again.
                after_crash = RawFrames(
                    blobs,
                    tmp_path / "raw-index.jsonl",
                    tmp_path / "u2",
                    detect=PiiDetector(
                        {"face_anonymize": FakeTask("face_anonymize")},
                        TASKS.redaction_policy(),
                    ).boxes,
                )
                request = RawRequest(request_id="r", seq=published[0]["seq"])
                if refs := await after_crash.resolve_raw_request(request):
                    break
            await asyncio.sleep(0.02)
        assert not slow_ocr.is_set() and len(published) == 1
        assert len(refs) == 1 and refs[0].sha256 != published[0]["raw_sha256"]  # blurred copy
    finally:
        slow_ocr.set()
        seqs = await processing
        processor.close()
        await outbox.close()
    ocr_seq = max(seqs)
    refs = await raw.resolve_raw_request(RawRequest(request_id="r2", seq=ocr_seq))
    assert len(refs) == 1
