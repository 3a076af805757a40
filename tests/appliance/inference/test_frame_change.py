"""Unchanged frames: the same scene (with sensor and JPEG noise) is recognised, a change is not."""

from __future__ import annotations

import cv2
import numpy as np

from appliance.inference.frame_change import UnchangedFrames
from appliance.sources.synthetic import SyntheticYardCamera


def _jpeg_again(image: np.ndarray, quality: int) -> np.ndarray:  # type: ignore[type-arg]
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_COLOR)  # type: ignore[no-any-return]


def test_same_scene_with_noise_is_unchanged_and_a_new_scene_is_not() -> None:
    camera = SyntheticYardCamera(seed=4)
    scene = camera.frame(0).image_bgr
    frames: UnchangedFrames[str] = UnchangedFrames(max_cell_change=4.0)
    thumb, remembered = frames.lookup(scene)
    assert remembered is None
    frames.remember(thumb, "read from frame 0")
    noise = np.random.default_rng(1).normal(0, 8, scene.shape)
    noisy = np.clip(scene + noise, 0, 255).astype(np.uint8)
    for again in (scene, _jpeg_again(scene, 80), _jpeg_again(noisy, 90)):
        assert frames.lookup(again)[1] == "read from frame 0"
    assert frames.hits == 3
    assert frames.lookup(camera.frame(1).image_bgr)[1] is None
    smaller = cv2.resize(scene, (640, 360))
    assert frames.lookup(smaller)[1] is None


def test_a_plate_coming_into_view_is_a_change() -> None:
    scene = np.full((720, 1280, 3), 120, np.uint8)
    frames: UnchangedFrames[str] = UnchangedFrames(max_cell_change=4.0)
    frames.remember(frames.lookup(scene)[0], "empty lane")
    with_plate = scene.copy()
    cv2.rectangle(with_plate, (600, 600), (760, 640), (255, 255, 255), -1)
    cv2.putText(with_plate, "AB12 CDE", (610, 632), cv2.FONT_HERSHEY_DUPLEX, 0.9, (0, 0, 0), 2)
    assert frames.lookup(with_plate)[1] is None
    frames.forget()
    assert frames.lookup(scene)[1] is None
