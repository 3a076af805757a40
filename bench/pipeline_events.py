"""Events records as the real pipeline writes them, from the seeded synthetic yard cameras.

``pipeline_events(frames)`` runs the daemon's frame path (``decode_frame``, the real
``FrameProcessor`` with the gate OCR and face tasks on the models in ``models/``,
plate tokens, kept originals, a real RocksDB outbox) over ``frames`` synthetic
frames, taken in turn from ``CAMERAS`` (each camera its own seed), and returns the
``events`` payloads the outbox holds, in seq order: varied container codes and
plate tokens, real boxes and confidences, real latencies, the kept original's
sha256.  Frames are stamped ``FRAME_INTERVAL_S`` apart per camera from a fixed
start, so the event times are the same in every run.

What the models see is the same in every run (seeded frames), so codes, boxes
and confidences are too; latencies are measured, so they vary.  The set is
generated once per machine and kept outside the repository, in
``~/.cache/yardlink/bench-events/`` (the file is named after the parameters and
``GENERATOR_VERSION``): a few minutes of inference, not an opaque committed blob.

    python -m bench.pipeline_events FRAMES   # generate (or find) the set; prints its path
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
CACHE_DIR = Path.home() / ".cache" / "yardlink" / "bench-events"
GENERATOR_VERSION = 1  # bump when the records would change (pipeline, cameras, stamping)
CAMERAS = (("gate-in", 11), ("gate-out", 12), ("yard-east", 13))
FRAME_INTERVAL_S = 1.5  # per camera: a frame every 1.5 s while trucks pass
START_TIME = 1_764_000_000.0
_MAX_FRAME_BYTES = 8 << 20

__all__ = ["CAMERAS", "cache_path", "pipeline_events"]


def cache_path(frames: int) -> Path:
    return CACHE_DIR / f"events-v{GENERATOR_VERSION}-{frames}frames.jsonl"


def _jpegs(frames: int) -> list[tuple[str, float, bytes]]:
    """(camera, event time, JPEG) for ``frames`` frames, the cameras taking turns."""
    from appliance.sources.synthetic import SyntheticYardCamera

    cameras = [(name, SyntheticYardCamera(seed=seed)) for name, seed in CAMERAS]
    out = []
    for i in range(frames):
        name, camera = cameras[i % len(cameras)]
        index = i // len(cameras)
        ok, jpeg = cv2.imencode(
            ".jpg", camera.frame(index).image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 90]
        )
        if not ok:
            raise RuntimeError(f"could not encode frame {i}")
        stamp = START_TIME + index * FRAME_INTERVAL_S + (i % len(cameras)) * 0.37
        out.append((name, stamp, jpeg.tobytes()))
    return out


async def _run_pipeline(frames: int, root: Path) -> list[bytes]:
    from appliance.config import SamplingSettings
    from appliance.inference.settings import InferenceSettings
    from appliance.inference.tasks import build_tasks
    from appliance.pipeline import FrameProcessor
    from appliance.privacy.blobstore import BlobStore
    from appliance.privacy.raw_frames import RawFrames
    from appliance.privacy.tokens import PlateTokenizer, load_plate_key
    from appliance.sampling import SamplingPolicy
    from appliance.sources.frames import decode_frame
    from appliance.telemetry import Telemetry
    from sync.outbox import Outbox
    from sync.protocol import Stream
    from sync.settings import Durability, OutboxSettings

    tasks, errors = build_tasks(InferenceSettings(), MODELS)
    if errors:
        raise RuntimeError("; ".join(f"{name}: {error}" for name, error in errors.items()))
    blobs = BlobStore(root / "blobs", root / "blob-keys")
    settings = OutboxSettings(path=str(root / "outbox"), durability=Durability.SYNC)
    outbox = Outbox.open(settings.path, settings)
    processor = FrameProcessor(
        device_id="yard-07",
        site_id="port-a",
        tasks=dict(tasks),
        outbox=outbox,
        tokenizer=PlateTokenizer(load_plate_key(None, root / "plate.key")),
        blobs=blobs,
        raw_frames=RawFrames(blobs, root / "raw-index.jsonl", root / "uploads"),
        sampling=SamplingPolicy(SamplingSettings()),
        telemetry=Telemetry({name: 400.0 for name in tasks}),
        keep_raw_frames=True,
        publish=lambda event: None,
    )
    try:
        for camera, stamp, jpeg in _jpegs(frames):
            frame = decode_frame(
                camera,
                jpeg,
                "image/jpeg",
                max_bytes=_MAX_FRAME_BYTES,
                reduction=processor.jpeg_reduction,
            )
            await processor.process(dataclasses.replace(frame, event_time=stamp))
        records = outbox.read(Stream.EVENTS, 0, max_records=10 * frames + 10, max_bytes=1 << 40)
        return [record.payload for record in records]
    finally:
        await asyncio.to_thread(processor.close)
        await outbox.close()


def pipeline_events(frames: int) -> list[bytes]:
    """The events payloads of ``frames`` frames through the real pipeline (cached)."""
    path = cache_path(frames)
    if path.exists():
        return [line for line in path.read_bytes().split(b"\n") if line]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="yardlink-events-") as tmp:
        payloads = asyncio.run(_run_pipeline(frames, Path(tmp)))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_bytes(b"\n".join(payloads) + b"\n")
    partial.replace(path)
    print(
        f"bench.pipeline_events: {len(payloads)} events from {frames} frames in "
        f"{time.perf_counter() - started:.0f} s -> {path}",
        file=sys.stderr,
    )
    return payloads


def describe(payloads: list[bytes]) -> dict[str, Any]:
    """A few counts that show how varied the set is."""
    records = [json.loads(p) for p in payloads]
    results = [r for record in records for r in record["results"]]
    return {
        "events": len(records),
        "results": len(results),
        "distinct_values": len({r["value"] for r in results}),
        "kinds": sorted({r["kind"] for r in results}),
        "mean_json_bytes": sum(map(len, payloads)) / max(len(payloads), 1),
    }


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    events = pipeline_events(count)
    print(cache_path(count), json.dumps(describe(events)))
