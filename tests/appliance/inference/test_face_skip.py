"""A site's opt-in: the face task answers a frame of the same scene with the last faces."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from skimage import data

from appliance.inference.face_anonymize import FaceAnonymizeTask
from appliance.inference.settings import FaceAnonymizeSettings
from appliance.sources.synthetic import SyntheticYardCamera

Image = np.ndarray[Any, Any]


def _noisy(image: Image, seed: int) -> Image:
    """The same scene sent again: fresh sensor noise, JPEG-encoded again."""
    noise = np.random.default_rng(seed).normal(0.0, 2.0, image.shape)
    shot = np.clip(image + noise, 0, 255).astype(np.uint8)
    encoded = cv2.imencode(".jpg", shot, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    assert decoded is not None
    return decoded


def test_the_same_scene_gets_the_last_faces_and_a_new_face_is_looked_for(
    face_task: FaceAnonymizeTask,
) -> None:
    frame = SyntheticYardCamera(2323).frame(3)
    assert frame.faces
    skipping = FaceAnonymizeTask(
        face_task.models, FaceAnonymizeSettings(skip_unchanged_max_change=4.0)
    )
    try:
        assert skipping.unchanged is not None
        first = skipping.run(_noisy(frame.image_bgr, 1)).detections
        assert first and skipping.unchanged.hits == 0
        again = skipping.run(_noisy(frame.image_bgr, 2)).detections
        assert again == first and skipping.unchanged.hits == 1
        # a person steps in: 96 px face in an empty part of the scene
        face = cv2.resize(data.astronaut()[30:230, 150:330], (96, 96))  # type: ignore[no-untyped-call]
        changed = frame.image_bgr.copy()
        changed[60:156, 40:136] = cv2.cvtColor(face, cv2.COLOR_RGB2BGR)
        boxes = [d.box for d in skipping.run(_noisy(changed, 3)).detections]
        assert skipping.unchanged.hits == 1
        assert any(abs(x + w / 2 - 88) < 24 and abs(y + h / 2 - 108) < 24 for x, y, w, h in boxes)
    finally:
        skipping.close()


def test_by_default_every_frame_is_looked_at(face_task: FaceAnonymizeTask) -> None:
    assert face_task.settings.skip_unchanged_max_change is None
    assert face_task.unchanged is None
