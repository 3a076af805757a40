"""The face task alone: the daemon decodes camera JPEGs 2x smaller, faces still land in
full-frame pixels, and the sampled copy that may leave is full size and blurred."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import data

from appliance.daemon import Daemon
from tests.appliance.daemon_harness import read_events, site_config, wait_for

FACE_AT = (820, 300, 360)  # x, y, side in the 1280x720 frame


def _frame_with_a_face() -> bytes:
    face = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[0:300, 100:380]
    frame = np.full((720, 1280, 3), 110, np.uint8)
    x, y, side = FACE_AT
    frame[y : y + side, x : x + side] = cv2.resize(face, (side, side))
    ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.tobytes()


def _sharpness(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


async def test_face_only_frames_are_decoded_smaller_and_faces_kept_in_frame_pixels(
    tmp_path: Path,
) -> None:
    config = site_config(
        tmp_path,
        inference={"gate_ocr": {"enabled": False}},
        sampling={"every_n_frames": 1, "max_per_hour": 1000, "low_confidence_every_n": 0},
    )
    daemon = Daemon(config)
    await daemon.start()
    jpeg = _frame_with_a_face()
    try:
        assert set(daemon.tasks) == {"face_anonymize"}
        assert daemon.processor.jpeg_reduction(1280, 720) == 2
        await daemon.submit_frame("gate-in", jpeg, "image/jpeg", {})
        await wait_for(lambda: len(daemon.raw_frames) == 1)
    finally:
        await daemon.stop()
    (event,) = await read_events(Path(config.outbox.path))
    faces = [r["box"] for r in event["results"] if r["kind"] == "face"]
    full = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    detections = daemon.tasks["face_anonymize"].run(full).detections
    expected = [list(d.box) for d in detections if d.kind == "face"]
    # her face, and (at ~0.5) the patch on her suit, which the small-face scan also takes
    # for one: the same boxes from the 1/2 decode as from the full one
    assert len(faces) == len(expected) >= 1
    x, y, side = FACE_AT
    for (x0, y0, x1, y1), (ex, ey, ew, eh) in zip(sorted(faces), sorted(expected), strict=True):
        assert max(abs(x0 - ex), abs(y0 - ey), abs(x1 - ex - ew), abs(y1 - ey - eh)) <= 6
        assert x <= x0 < x1 <= x + side and y <= y0 < y1 <= y + side
    x0, y0, x1, y1 = max(faces, key=lambda box: box[2] - box[0])  # her face
    assert x1 - x0 >= 100
    (entry,) = daemon.raw_frames._by_seq.values()
    blurred = cv2.imdecode(np.frombuffer(daemon.blobs.get(entry.sha256), np.uint8), 1)
    assert blurred.shape == (720, 1280, 3)  # the full frame, not the reduced decode
    assert _sharpness(blurred[y0:y1, x0:x1]) < 0.2 * _sharpness(full[y0:y1, x0:x1])
