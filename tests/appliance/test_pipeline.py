"""PII scan: after synthetic frames full of plates, no plate is on disk in clear anywhere."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import cv2
import numpy as np

from appliance.daemon import Daemon
from appliance.privacy.blobstore import utc_day
from appliance.privacy.raw_frames import RawFrames
from appliance.sources.frames import decode_frame
from appliance.sources.synthetic import SyntheticYardCamera
from sync.outbox import Outbox
from sync.protocol import RawRequest, Stream
from tests.appliance.daemon_harness import read_events, site_config, wait_for

FRAMES = 10


def _needles(plate: str) -> set[bytes]:
    compact = plate.replace(" ", "")
    forms = {plate, compact, plate.lower(), compact.lower()}
    return {form.encode() for form in forms} | {form.encode("utf-16-le") for form in forms}


async def test_no_plate_in_clear_in_the_outbox_or_blob_store(tmp_path: Path) -> None:
    config = site_config(
        tmp_path, sampling={"every_n_frames": 1, "max_per_hour": 1000, "low_confidence_every_n": 0}
    )
    daemon = Daemon(config)
    await daemon.start()
    camera = SyntheticYardCamera(11, plate_probability=1.0, difficulty="clean")
    frames = camera.frames(FRAMES)
    plates = [t.value for f in frames for t in f.truths if t.kind == "plate"]
    assert len(plates) == FRAMES
    try:
        for frame in frames:
            decoded = decode_frame("gate-in", frame.encode(), "image/jpeg", max_bytes=1 << 24)
            await daemon.queue_frame(decoded)
        await wait_for(lambda: daemon.telemetry.results["gate_ocr"] == FRAMES)
        await wait_for(lambda: len(daemon.raw_frames) == FRAMES)
    finally:
        await daemon.stop()
    events = await read_events(Path(config.outbox.path))
    assert len(events) == 2 * FRAMES
    tokens = [r["value"] for e in events for r in e["results"] if r["kind"] == "plate"]
    assert len(tokens) >= FRAMES // 2, "the OCR should read most clean plates"
    assert all(token.startswith("pt1:") for token in tokens)
    assert all(e["raw_sha256"] for e in events)
    scanned = 0
    for path in (tmp_path / "var").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            scanned += len(data)
            for plate in plates:
                for needle in _needles(plate):
                    assert needle not in data, f"plate {plate!r} in clear in {path}"
    assert scanned > 100_000
    # the sync engine's adapter resolves a raw request and hands out the blurred JPEG
    raw = RawFrames(daemon.blobs, tmp_path / "var" / "raw-index.jsonl", tmp_path / "up")
    seq = events[0]["seq"] or min(raw._by_seq)  # events carry seq 0; the outbox assigns it
    refs = await raw.resolve_raw_request(RawRequest(request_id="r1", seq=seq))
    assert len(refs) == 1 and refs[0].meta["kind"] == "frame_blurred"
    upload = await raw.open_for_upload(refs[0])
    assert upload.stat().st_size == refs[0].size
    assert upload.read_bytes()[:3] == b"\xff\xd8\xff"
    assert await raw.resolve_raw_request(RawRequest(request_id="r2", seq=10**9)) == []
    # ... and no plate can be read back from the pixels of any copy that may leave
    ocr = daemon.tasks["gate_ocr"]
    compact = {plate.replace(" ", "") for plate in plates}
    for entry in raw._by_seq.values():
        image = cv2.imdecode(np.frombuffer(daemon.blobs.get(entry.sha256), np.uint8), 1)
        read = {d.value.replace(" ", "") for d in ocr.run(image).detections}
        assert not read & compact, f"a plate is readable in the blurred copy of seq {entry.seq}"
    await asyncio.sleep(0)


async def test_telemetry_records_carry_latency_vs_sla_and_drops(tmp_path: Path) -> None:
    config = site_config(
        tmp_path,
        telemetry={"interval_s": 0.2},
        sources={"cameras": [{"id": "gate-in"}], "queue_bound": 1},
    )
    daemon = Daemon(config)
    await daemon.start()
    try:
        camera = SyntheticYardCamera(4)
        for index in range(4):  # bound 1: while the first frame runs, older queued ones drop
            data = camera.frame(index).encode()
            daemon.queues.put_nowait(decode_frame("gate-in", data, None, max_bytes=1 << 24))
        assert daemon.queues.dropped["gate-in"] == 3

        def telemetry_with_results() -> bool:
            assert daemon.outbox is not None
            for record in daemon.outbox.read(Stream.TELEMETRY):
                body = json.loads(json.loads(record.payload)["body"])
                if body["tasks"]["gate_ocr"]["results"] >= 1:
                    return True
            return False

        await wait_for(telemetry_with_results)
    finally:
        await daemon.stop()
    outbox = Outbox.open(config.outbox.path)
    try:
        last = json.loads(outbox.read(Stream.TELEMETRY)[-1].payload)
    finally:
        await outbox.close()
    assert last["kind"] == "appliance" and last["device_id"] == "gate-01"
    body = json.loads(last["body"])
    assert body["dropped_frames"] == {"gate-in": 3}
    assert body["tasks"]["gate_ocr"]["sla_p99_ms"] == 300.0
    assert body["tasks"]["gate_ocr"]["latency_ms"]["p50"] > 0


async def test_a_blob_store_failure_keeps_the_frames_events(tmp_path: Path) -> None:
    """Today's key file is damaged, so the original cannot be kept: the frame's events
    records are still made durable (without ``raw_sha256``), not lost with the blob."""
    config = site_config(tmp_path, inference={"face_anonymize": {"enabled": False}})
    keys = tmp_path / "var" / "blob-keys"
    keys.mkdir(parents=True)
    frame = decode_frame(
        "gate-in", SyntheticYardCamera(3).frame(0).encode(), "image/jpeg", max_bytes=1 << 24
    )
    (keys / f"{utc_day(frame.event_time)}.key").write_bytes(b"torn")
    daemon = Daemon(config)
    await daemon.start()
    try:
        await daemon.queue_frame(frame)
        await wait_for(lambda: daemon.telemetry.raw_store_errors["gate-in"] == 1, timeout=30)
        await wait_for(lambda: daemon.telemetry.results["gate_ocr"] == 1, timeout=30)
    finally:
        await daemon.stop()
    events = await read_events(Path(config.outbox.path))
    assert [(e["task"], e["raw_sha256"]) for e in events] == [("gate_ocr", None)]
