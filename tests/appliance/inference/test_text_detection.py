from __future__ import annotations

import numpy as np
import pytest

from appliance.inference.text_detection import (
    DetectionParams,
    detect_boxes,
    detection_input,
    detection_size,
)


@pytest.mark.parametrize(
    ("hw", "max_side", "expected"),
    [((720, 1280), 640, (352, 640)), ((100, 50), 640, (96, 64)), ((10, 10), 640, (32, 32))],
)
def test_detection_size_is_capped_and_a_multiple_of_32(hw, max_side, expected) -> None:  # type: ignore[no-untyped-def]
    assert detection_size(*hw, max_side) == expected


def test_detection_input_is_normalised_chw() -> None:
    image = np.zeros((720, 1280, 3), np.uint8)
    image[..., 2] = 255
    tensor = detection_input(image, 640)
    assert tensor.shape == (1, 3, 352, 640)
    assert tensor.dtype == np.float32
    assert np.allclose(tensor[0, 0], -1.0) and np.allclose(tensor[0, 2], 1.0)


def test_one_text_blob_becomes_one_grown_box_in_source_pixels() -> None:
    probability = np.zeros((320, 640), np.float32)
    probability[100:120, 200:400] = 0.9  # 200 x 20 text line on the map
    boxes = detect_boxes(probability, (640, 1280), DetectionParams())
    assert len(boxes) == 1
    x, y, w, h = boxes[0].bounds
    # grown by area * 1.6 / perimeter = 200*20*1.6/440 ~ 14.5 map px per side, then x2 to source
    assert 360 <= x <= 380 and 170 <= y <= 185
    assert 450 <= w <= 470 and 90 <= h <= 110
    # the 2x2 dilation adds a zero row and column: 0.9 * 200 * 20 / (201 * 21)
    assert boxes[0].score == pytest.approx(0.853, abs=0.01)


def test_weak_blobs_and_specks_are_dropped() -> None:
    probability = np.zeros((320, 640), np.float32)
    probability[10:30, 10:200] = 0.4  # above thresh, below box_thresh
    probability[200:202, 300:302] = 0.99  # a speck
    assert detect_boxes(probability, (320, 640), DetectionParams()) == []
