from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.inference.blazeface import (
    Letterbox,
    decode,
    iter_tile_inputs,
    jpeg_reduction,
    letterbox,
    ssd_anchors,
    tile_inputs,
    tile_regions,
    to_frame,
    union_merge,
    weighted_nms,
)


def test_anchor_layout_matches_mediapipe_short_range() -> None:
    anchors = ssd_anchors()
    assert anchors.shape == (896, 2)
    # stride 8: 16x16 cells, 2 anchors each, row-major from the top-left cell
    assert np.allclose(anchors[0], anchors[1])
    assert np.allclose(anchors[0], [0.5 / 16, 0.5 / 16])
    assert np.allclose(anchors[2], [1.5 / 16, 0.5 / 16])
    # the three stride-16 layers share an 8x8 grid with 6 anchors per cell
    assert np.allclose(anchors[512:518], [0.5 / 8, 0.5 / 8])
    assert np.allclose(anchors[-1], [7.5 / 8, 7.5 / 8])


def test_decode_applies_sigmoid_and_anchor_offsets() -> None:
    anchors = ssd_anchors()
    regressors = np.zeros((1, 896, 16), np.float32)
    logits = np.full((1, 896, 1), -50.0, np.float32)
    logits[0, 600] = 1000.0  # clipped to 100 before the sigmoid
    regressors[0, 600, :4] = [12.8, -12.8, 25.6, 38.4]  # +0.1, -0.1, w 0.2, h 0.3
    boxes, scores = decode(regressors, logits, anchors, 0.5)
    assert scores.tolist() == [1.0]
    cx, cy = anchors[600] + [0.1, -0.1]
    assert np.allclose(boxes[0], [cx - 0.1, cy - 0.15, cx + 0.1, cy + 0.15], atol=1e-6)


def _decode_every_anchor(
    regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray, min_score: float
) -> tuple[np.ndarray, np.ndarray]:
    """The reference decode: the sigmoid of every anchor's logit, then the threshold."""
    clipped = np.clip(logits.reshape(-1).astype(np.float64), -100, 100)
    scores = (1.0 / (1.0 + np.exp(-clipped))).astype(np.float32)
    keep = scores >= min_score
    raw = regressors.reshape(-1, 16)[keep]
    centre = raw[:, 0:2] / 128.0 + anchors[keep]
    half = raw[:, 2:4] / 128.0 / 2.0
    return np.concatenate([centre - half, centre + half], axis=1), scores[keep]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    spread=st.floats(0.01, 200.0),
    min_score=st.floats(0.05, 0.95),
)
def test_decode_of_candidates_only_equals_decoding_every_anchor(
    seed: int, spread: float, min_score: float
) -> None:
    rng = np.random.default_rng(seed)
    anchors = ssd_anchors()
    regressors = rng.normal(0, 20, (1, 896, 16)).astype(np.float32)
    logits = rng.normal(0, spread, (1, 896, 1)).astype(np.float32)
    logit = float(np.log(min_score / (1 - min_score)))
    logits[0, :8, 0] = np.float32(logit) + np.array([-1e-4, 0, 1e-4, 0, 0, 0, 0, 0], np.float32)
    boxes, scores = decode(regressors, logits, anchors, min_score)
    expected_boxes, expected_scores = _decode_every_anchor(regressors, logits, anchors, min_score)
    assert scores.tolist() == expected_scores.tolist()
    assert np.allclose(boxes, expected_boxes, atol=1e-6)


def test_weighted_nms_merges_overlaps_by_score() -> None:
    boxes = np.array([[0, 0, 1, 1], [0.1, 0, 1.1, 1], [5, 5, 6, 6]], np.float32)
    scores = np.array([0.9, 0.3, 0.8], np.float32)
    merged = weighted_nms(boxes, scores, 0.3)
    assert [round(s, 2) for _, s in merged] == [0.9, 0.8]
    assert np.allclose(merged[0][0], [0.025, 0, 1.025, 1])


def test_to_frame_undoes_the_letterbox() -> None:
    fit = Letterbox(scale=0.1, pad_x=0.0, pad_y=28.0)  # 1280x720 frame into 128x128
    face = to_frame(np.array([0.5, 0.5, 0.75, 0.75], np.float32), 0.9, fit, (720, 1280))
    assert face is not None
    assert face.as_int() == (640, 360, 320, 320)


def test_tiles_cover_the_frame_with_overlap() -> None:
    regions = tile_regions(720, 1280, [1.0, 0.5], 0.33)
    assert regions[0] == (0, 0, 1280, 720)
    full_height = [r for r in regions[1:] if r[3] == 720]
    half = [r for r in regions[1:] if r[3] == 360]
    assert [r[0] for r in full_height] == [0, 482, 560]
    assert len(half) == 15
    covered = np.zeros((720, 1280), bool)
    for x, y, w, h in half:
        covered[y : y + h, x : x + w] = True
    assert covered.all()
    # a square frame needs no full-size tile; no fractions means the whole frame only
    assert tile_regions(512, 512, [1.0], 0.33) == [(0, 0, 512, 512)]
    assert tile_regions(720, 1280, [], 0.33) == [(0, 0, 1280, 720)]


def test_union_merge_encloses_a_face_cut_by_a_tile_edge() -> None:
    whole = [100, 100, 200, 220]
    cut = [150, 100, 200, 220]  # the right half, seen by a tile starting at x=150
    other = [400, 400, 450, 450]
    merged = union_merge(np.array([cut, whole, other], np.float32), np.array([0.9, 0.8, 0.7]), 0.3)
    assert [(b.tolist(), round(s, 2)) for b, s in merged] == [
        ([100, 100, 200, 220], 0.9),
        ([400, 400, 450, 450], 0.7),
    ]


def test_union_merge_keeps_a_box_many_times_larger_apart() -> None:
    """A low-scored box several faces wide around a face is not that face's box: the
    face keeps its own (both are still hidden on release)."""
    face = [822, 150, 897, 225]
    around = [731, 120, 957, 346]  # 3x the face's side, scored lower
    merged = union_merge(np.array([face, around], np.float32), np.array([0.96, 0.44]), 0.3)
    assert [(b.tolist(), round(s, 2)) for b, s in merged] == [(face, 0.96), (around, 0.44)]


def test_tile_inputs_match_letterboxing_each_region() -> None:
    rng = np.random.default_rng(1)
    small = rng.integers(0, 255, (9, 16, 3), dtype=np.uint8)
    frame = cv2.resize(small, (1280, 720), interpolation=cv2.INTER_CUBIC)  # smooth content
    regions = tile_regions(720, 1280, [1.0, 0.5], 0.33)
    inputs = tile_inputs(frame, regions)
    assert [r for r, _, _ in inputs] == regions
    for (x, y, w, h), tensor, fit in inputs:
        expected, expected_fit = letterbox(frame[y : y + h, x : x + w])
        assert tensor.shape == expected.shape == (1, 128, 128, 3)
        assert np.abs(tensor - expected).mean() < 0.05
        assert fit.scale == pytest.approx(expected_fit.scale, rel=0.02)
        assert (fit.pad_x, fit.pad_y) == pytest.approx(
            (expected_fit.pad_x, expected_fit.pad_y), abs=1
        )


def test_jpeg_reduction_follows_the_finest_region() -> None:
    tiled = tile_regions(720, 1280, [1.0, 0.5], 0.33)
    assert jpeg_reduction(720, 1280, tiled) == 2  # 360 px tiles: 180 px at 1/2
    assert jpeg_reduction(720, 1280, tile_regions(720, 1280, [], 0.33)) == 8  # 160x90
    assert jpeg_reduction(1080, 1920, tile_regions(1080, 1920, [1.0, 0.5], 0.33)) == 4
    assert jpeg_reduction(722, 1282, tile_regions(722, 1282, [1.0, 0.5], 0.33)) == 2
    assert jpeg_reduction(721, 1281, tile_regions(721, 1281, [1.0, 0.5], 0.33)) == 1


def test_tile_inputs_of_a_reduced_frame_map_back_to_full_frame_pixels() -> None:
    rng = np.random.default_rng(3)
    full = cv2.resize(rng.integers(0, 255, (90, 160, 3), dtype=np.uint8), (1280, 720))
    half = cv2.resize(full, (640, 360), interpolation=cv2.INTER_AREA)
    regions = tile_regions(720, 1280, [1.0, 0.5], 0.33)
    from_full = tile_inputs(full, regions)
    from_half = list(iter_tile_inputs(half, regions, reduced_by=2))
    assert [r for r, _, _ in from_half] == [r for r, _, _ in from_full]
    for (_, a, fit_a), (_, b, fit_b) in zip(from_full, from_half, strict=True):
        assert fit_a == fit_b  # same mapping back into full-frame pixels
        assert float(np.abs(a - b).mean()) < 0.02  # same pixels, up to rounding
