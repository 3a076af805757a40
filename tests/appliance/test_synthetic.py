from __future__ import annotations

import cv2
import numpy as np
import pytest

from appliance.inference import iso6346
from appliance.inference.text_kinds import parse_uk_plate
from appliance.sources.synthetic import SyntheticYardCamera


def test_frames_are_deterministic_per_seed_and_index() -> None:
    first = SyntheticYardCamera(seed=4).frame(7)
    again = SyntheticYardCamera(seed=4).frame(7)
    other = SyntheticYardCamera(seed=5).frame(7)
    assert np.array_equal(first.image_bgr, again.image_bgr)
    assert first.truths == again.truths
    assert not np.array_equal(first.image_bgr, other.image_bgr)


def test_ground_truth_is_consistent() -> None:
    camera = SyntheticYardCamera(seed=1, invalid_fraction=0.3)
    frames = camera.frames(60)
    codes = [t for f in frames for t in f.truths if t.kind == "container_code"]
    plates = [t for f in frames for t in f.truths if t.kind == "plate"]
    assert len(codes) == 60
    for code in codes:
        parsed = iso6346.parse(code.value)
        assert parsed is not None and parsed.valid == code.valid
    invalid_share = sum(not c.valid for c in codes) / len(codes)
    assert 0.15 <= invalid_share <= 0.45
    assert 0.6 <= len(plates) / 60 <= 0.95
    assert all(parse_uk_plate(p.value) == p.value for p in plates)
    for frame in frames:
        height, width = frame.image_bgr.shape[:2]
        assert frame.image_bgr.dtype == np.uint8 and (height, width) == (720, 1280)
        for truth in frame.truths:
            x, y, w, h = truth.box
            assert x >= -20 and x + w <= width + 20 and w > 0 and h > 0


def test_varied_frames_vary() -> None:
    conditions = [f.conditions for f in SyntheticYardCamera(seed=2).frames(30)]
    assert len({round(c.rotation_deg, 3) for c in conditions}) > 20
    assert any(c.blur_sigma > 0 for c in conditions)
    assert min(c.gain for c in conditions) < 0.8 < 1.1 < max(c.gain for c in conditions)
    clean = [f.conditions for f in SyntheticYardCamera(seed=2, difficulty="clean").frames(10)]
    assert all(c.rotation_deg == 0 and c.blur_sigma == 0 for c in clean)


def test_encoded_frames_decode() -> None:
    frame = SyntheticYardCamera(seed=0, width=640, height=360).frame(0)
    png = cv2.imdecode(np.frombuffer(frame.encode(".png"), np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(png, frame.image_bgr)
    jpeg = cv2.imdecode(np.frombuffer(frame.encode(".jpg"), np.uint8), cv2.IMREAD_COLOR)
    assert jpeg.shape == frame.image_bgr.shape


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="invalid_fraction"):
        SyntheticYardCamera(invalid_fraction=1.5)
    with pytest.raises(ValueError, match="stacked_fraction"):
        SyntheticYardCamera(stacked_fraction=-0.1)


def test_stacked_layout_puts_the_code_on_two_lines() -> None:
    row = SyntheticYardCamera(seed=3, difficulty="clean", stacked_fraction=0.0).frame(0)
    stacked = SyntheticYardCamera(seed=3, difficulty="clean", stacked_fraction=1.0).frame(0)
    (_, _, row_w, row_h) = row.truths[0].box
    (_, _, stacked_w, stacked_h) = stacked.truths[0].box
    assert stacked_h > 1.8 * row_h
    assert stacked_w < row_w
