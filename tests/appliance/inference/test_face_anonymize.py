"""Real BlazeFace on LiteRT, on scikit-image's astronaut photo (Eileen Collins)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from appliance.inference.face_anonymize import FaceAnonymizeTask, blur_faces


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def _sharpness(region: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(region, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def test_face_is_found_where_it_is(face_task: FaceAnonymizeTask, astronaut: np.ndarray) -> None:
    result = face_task.run(astronaut)
    faces = [d for d in result.detections if d.kind == "face"]
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    # her face spans roughly x 170-280, y 60-200 in the 512x512 photo
    assert 140 <= x + w / 2 <= 260 and 90 <= y + h / 2 <= 180
    assert 60 <= w <= 160
    assert faces[0].confidence >= 0.7


@pytest.mark.parametrize("method", ["pixelate", "gaussian"])
def test_face_comes_out_blurred(
    face_task: FaceAnonymizeTask, astronaut: np.ndarray, method: str
) -> None:
    result = face_task.run(astronaut)
    (x, y, w, h) = result.detections[0].box
    blurred = blur_faces(astronaut, [d.box for d in result.detections], method=method)  # type: ignore[arg-type]
    before, after = astronaut[y : y + h, x : x + w], blurred[y : y + h, x : x + w]
    assert after.astype(np.float64).var() < 0.6 * before.astype(np.float64).var()
    assert _sharpness(after) < 0.05 * _sharpness(before)
    assert face_task.run(blurred).detections == [] or method == "gaussian"
    # nothing far from the face changed
    assert np.array_equal(blurred[400:], astronaut[400:])
    assert np.array_equal(astronaut, cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))


def test_no_face_in_a_yard_scene(face_task: FaceAnonymizeTask) -> None:
    from appliance.sources.synthetic import SyntheticYardCamera

    frame = SyntheticYardCamera(seed=2).frame(0)
    assert face_task.run(frame.image_bgr).detections == []


def test_blur_clips_boxes_at_the_frame_edge() -> None:
    image = np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    out = blur_faces(image, [(-20, 80, 50, 50)])
    assert out.shape == image.shape
    assert _sharpness(out[85:, :25]) < 0.2 * _sharpness(image[85:, :25])
