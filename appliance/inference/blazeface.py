"""BlazeFace (MediaPipe short-range face detection) pre- and post-processing, no I/O.

The model takes a 128x128 RGB image in [-1, 1] and returns, for each of 896
SSD anchors, 16 regressors (box centre x/y, width, height, then 6 keypoints)
and one classification logit.  The anchors and the decode follow MediaPipe's
``face_detection_short_range.pbtxt``:

* ``SsdAnchorsCalculator``: 4 layers, strides 8, 16, 16, 16, anchor offset
  0.5, aspect ratio 1 plus one interpolated-scale anchor per layer,
  ``fixed_anchor_size`` (every anchor is 1x1, only its centre matters).
  Consecutive layers with the same stride share one grid, so the stride-8
  layer gives 16x16 cells x 2 anchors = 512 and the three stride-16 layers
  8x8 cells x 6 anchors = 384: 896 in all.
* ``TensorsToDetectionsCalculator``: ``reverse_output_order`` (x before y),
  scales 128, sigmoid scores clipped at +-100, ``min_score_thresh`` 0.5.
* ``NonMaxSuppressionCalculator``: weighted NMS at IoU 0.3.

Frames are letterboxed (aspect ratio kept, black bars) into the 128x128 input
and boxes mapped back to frame pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

__all__ = [
    "INPUT_SIZE",
    "MERGE_AREA_RATIO",
    "FaceBox",
    "Halvings",
    "Letterbox",
    "decode",
    "iter_tile_inputs",
    "letterbox",
    "jpeg_reduction",
    "shrink",
    "ssd_anchors",
    "tile_inputs",
    "to_unit_rgb",
    "tile_regions",
    "union_merge",
    "weighted_nms",
]

INPUT_SIZE = 128
MERGE_AREA_RATIO = 4.0  # union_merge joins boxes at most this far apart in area (2x a side)
_STRIDES = (8, 16, 16, 16)
_ANCHORS_PER_LAYER = 2  # aspect ratio 1.0 + the interpolated scale
_SCALE = 128.0
_SCORE_CLIP = 100.0

FloatArray = np.ndarray[Any, np.dtype[np.float32]]


def ssd_anchors(input_size: int = INPUT_SIZE, strides: tuple[int, ...] = _STRIDES) -> FloatArray:
    """Anchor centres ``(N, 2)`` as (x, y) in [0, 1], in the model's output order."""
    centres: list[tuple[float, float]] = []
    layer = 0
    while layer < len(strides):
        same = layer
        while same < len(strides) and strides[same] == strides[layer]:
            same += 1
        per_cell = _ANCHORS_PER_LAYER * (same - layer)
        cells = math.ceil(input_size / strides[layer])
        for y in range(cells):
            for x in range(cells):
                centres.extend([((x + 0.5) / cells, (y + 0.5) / cells)] * per_cell)
        layer = same
    return np.array(centres, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a frame was fitted into the square input: scale and padding in input pixels."""

    scale: float
    pad_x: float
    pad_y: float


def letterbox(image_bgr: np.ndarray[Any, Any]) -> tuple[FloatArray, Letterbox]:
    """The (1, 128, 128, 3) RGB [-1, 1] tensor for a BGR frame, and how to map back."""
    height, width = image_bgr.shape[:2]
    scale = min(INPUT_SIZE / width, INPUT_SIZE / height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    pad_x, pad_y = (INPUT_SIZE - new_w) // 2, (INPUT_SIZE - new_h) // 2
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
    tensor = rgb.astype(np.float32) * (2.0 / 255.0) - 1.0
    return tensor[np.newaxis], Letterbox(scale, float(pad_x), float(pad_y))


@dataclass(frozen=True, slots=True)
class FaceBox:
    """A face in frame pixels: ``(x, y, width, height)`` and its score."""

    x: float
    y: float
    width: float
    height: float
    score: float

    def as_int(self) -> tuple[int, int, int, int]:
        return round(self.x), round(self.y), round(self.width), round(self.height)


def decode(
    regressors: np.ndarray[Any, Any],
    logits: np.ndarray[Any, Any],
    anchors: FloatArray,
    min_score: float,
) -> tuple[FloatArray, FloatArray]:
    """Boxes ``(K, 4)`` as (x0, y0, x1, y1) in [0, 1] input coordinates and scores ``(K,)``.

    The raw logits are compared with the logit of ``min_score`` first, so the sigmoid
    and the box decode run only on the few candidate anchors (usually none of 896);
    the exact score test on those keeps the result identical to scoring every anchor.
    """
    flat = logits.reshape(-1)
    threshold = math.log(min_score / (1.0 - min_score)) - 1e-3
    candidates = np.flatnonzero(flat >= threshold)
    if not candidates.size:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    clipped = np.clip(flat[candidates].astype(np.float64), -_SCORE_CLIP, _SCORE_CLIP)
    scores = (1.0 / (1.0 + np.exp(-clipped))).astype(np.float32)
    keep = candidates[scores >= min_score]
    scores = scores[scores >= min_score]
    raw = regressors.reshape(-1, regressors.shape[-1])[keep]
    centre = raw[:, 0:2] / _SCALE + anchors[keep]
    half = raw[:, 2:4] / _SCALE / 2.0
    boxes = np.concatenate([centre - half, centre + half], axis=1).astype(np.float32)
    return boxes, scores


def _overlap(box: FloatArray, others: FloatArray, *, of_smaller: bool = False) -> FloatArray:
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = np.minimum(area, areas) if of_smaller else area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


def weighted_nms(
    boxes: FloatArray, scores: FloatArray, iou_threshold: float
) -> list[tuple[FloatArray, float]]:
    """MediaPipe's weighted NMS: each cluster becomes the score-weighted mean of its boxes."""
    order = np.argsort(-scores, kind="stable")
    remaining_boxes, remaining_scores = boxes[order], scores[order]
    merged: list[tuple[FloatArray, float]] = []
    while len(remaining_boxes):
        overlap = _overlap(remaining_boxes[0], remaining_boxes)
        cluster = overlap > iou_threshold
        cluster[0] = True
        weights = remaining_scores[cluster]
        mean = (remaining_boxes[cluster] * weights[:, None]).sum(axis=0) / weights.sum()
        merged.append((mean.astype(np.float32), float(remaining_scores[0])))
        remaining_boxes, remaining_scores = remaining_boxes[~cluster], remaining_scores[~cluster]
    return merged


def union_merge(
    boxes: FloatArray, scores: FloatArray, overlap_threshold: float
) -> list[tuple[FloatArray, float]]:
    """Merge detections from different tiles: boxes overlapping by more than the threshold
    (intersection over the smaller box, so a face cut by a tile edge joins the whole one)
    become their enclosing box, with the best score.  Enclosing, not averaging: a blur
    region must cover the whole face.  Boxes more than ``MERGE_AREA_RATIO`` apart in
    area stay apart (a low-scored box several faces wide around a face is not that face's
    box; both are still hidden)."""
    order = np.argsort(-scores, kind="stable")
    remaining_boxes, remaining_scores = boxes[order], scores[order]
    merged: list[tuple[FloatArray, float]] = []
    while len(remaining_boxes):
        areas = np.prod(remaining_boxes[:, 2:] - remaining_boxes[:, :2], axis=1)
        ratio = areas / max(float(areas[0]), 1e-9)
        similar = (ratio <= MERGE_AREA_RATIO) & (ratio >= 1.0 / MERGE_AREA_RATIO)
        overlapping = _overlap(remaining_boxes[0], remaining_boxes, of_smaller=True)
        cluster = (overlapping > overlap_threshold) & similar
        cluster[0] = True
        members = remaining_boxes[cluster]
        enclosing = np.concatenate([members[:, :2].min(axis=0), members[:, 2:].max(axis=0)])
        merged.append((enclosing.astype(np.float32), float(remaining_scores[0])))
        remaining_boxes, remaining_scores = remaining_boxes[~cluster], remaining_scores[~cluster]
    return merged


def _positions(length: int, side: int, stride: int) -> list[int]:
    if side >= length:
        return [0]
    starts = list(range(0, length - side + 1, stride))
    if starts[-1] != length - side:
        starts.append(length - side)
    return starts


def tile_regions(
    height: int, width: int, fractions: Sequence[float], overlap: float
) -> list[tuple[int, int, int, int]]:
    """Regions ``(x, y, w, h)`` to run the detector on: the whole frame, then square tiles.

    The short-range model finds faces that fill roughly 10-80% of its input; a
    face of 60 px in a 1280x720 frame letterboxed to 128 px is far below that.
    Tiles whose side is each fraction of the frame's short side, overlapping by
    ``overlap``, bring smaller faces into range.
    """
    regions = [(0, 0, width, height)]
    short = min(height, width)
    for fraction in fractions:
        side = max(16, round(short * fraction))
        if side >= max(height, width):
            continue  # the whole frame already covers it
        stride = max(1, round(side * (1.0 - overlap)))
        for y in _positions(height, side, stride):
            for x in _positions(width, side, stride):
                region = (x, y, min(side, width), min(side, height))
                if region not in regions:
                    regions.append(region)
    return regions


def _halvings(image: np.ndarray[Any, Any], size: tuple[int, int]) -> tuple[Any, int]:
    """``image`` halved (OpenCV's fast 2x INTER_AREA) while it stays at least ``size``
    (w, h) and its sides are even, and the factor it was shrunk by."""
    return Halvings(image).for_size(size)


class Halvings:
    """An image and its halvings (OpenCV's fast 2x INTER_AREA), each made once, on
    first need.  Every input of a frame (each scan's scale, the whole frame) shrinks
    from the smallest halving still at least twice its size, so a frame is halved
    once per level however many inputs are made from it; the results are exactly
    those of ``shrink`` on the frame itself (a halving is the same whatever asks)."""

    def __init__(self, image: np.ndarray[Any, Any]) -> None:
        self._levels = [image]

    def level(self, times: int) -> np.ndarray[Any, Any]:
        """The image halved ``times`` times (each side must stay even before a halving)."""
        while len(self._levels) <= times:
            last = self._levels[-1]
            height, width = last.shape[:2]
            if width % 2 or height % 2:
                raise ValueError(f"a {width}x{height} image cannot be halved exactly")
            half = cv2.resize(last, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
            self._levels.append(half)
        return self._levels[times]

    def for_size(self, size: tuple[int, int]) -> tuple[np.ndarray[Any, Any], int]:
        """The image halved while it stays at least ``size`` (w, h) and its sides are
        even, and the factor it was shrunk by."""
        times = 0
        height, width = self._levels[0].shape[:2]
        while width >= 2 * size[0] and height >= 2 * size[1] and width % 2 == 0 and height % 2 == 0:
            height, width, times = height // 2, width // 2, times + 1
        return self.level(times), 2**times

    def shrink(self, size: tuple[int, int]) -> np.ndarray[Any, Any]:
        """``shrink(image, size)``, from the halvings already made."""
        image, _ = self.for_size(size)
        height, width = image.shape[:2]
        if (width, height) == size:
            return image
        linear = width <= 2 * size[0] and height <= 2 * size[1]
        return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR if linear else cv2.INTER_AREA)


def shrink(image: np.ndarray[Any, Any], size: tuple[int, int]) -> np.ndarray[Any, Any]:
    """``image`` resized down to ``size`` (w, h) as a box average, cheaply: exact halvings
    while it is at least twice as big (OpenCV's fast 2x INTER_AREA path), then the rest,
    under 2x, with INTER_LINEAR, which at such ratios blends the same 2x2 neighbourhoods
    a box filter would.  A fractional or 5x INTER_AREA costs 5-10x more (2-3 ms for
    640x360 -> 455x256 on this class of CPU) and would hold up the model."""
    return Halvings(image).shrink(size)


JPEG_REDUCTIONS = (8, 4, 2, 1)  # the scales libjpeg decodes at directly (in the DCT domain)


def jpeg_reduction(height: int, width: int, regions: Sequence[tuple[int, int, int, int]]) -> int:
    """The largest JPEG reduction (1, 2, 4 or 8) from which every region's input can be
    made by shrinking only, never enlarging: each region at least 128 px on its longer
    side once reduced.  Only a reduction that divides both sides: the reduced image is
    then exactly the frame's size over it, so the regions and boxes map back exactly.

    For 1280x720 and the default tiles it is 2: the smallest tiles (360 px) are 180 px
    in a 640x360 decode; the whole frame (128x72 in the model) would do with 1/8.
    Checked on the benchmark frames and the test images: the faces found from a 1/2
    decode are those found from the full decode, boxes within a few pixels
    (docs/INFERENCE.md).
    """
    needed = min((max(w, h) for _, _, w, h in regions), default=max(height, width))
    return next(
        (
            d
            for d in JPEG_REDUCTIONS
            if needed / d >= INPUT_SIZE and width % d == 0 and height % d == 0
        ),
        1,
    )


def tile_inputs(
    image_bgr: np.ndarray[Any, Any], regions: Sequence[tuple[int, int, int, int]]
) -> list[tuple[tuple[int, int, int, int], FloatArray, Letterbox]]:
    """Model inputs for each region: ``(region, tensor, how to map back into the region)``."""
    return list(iter_tile_inputs(image_bgr, regions))


def iter_tile_inputs(
    image_bgr: np.ndarray[Any, Any],
    regions: Sequence[tuple[int, int, int, int]],
    *,
    reduced_by: int = 1,
    halvings: Halvings | None = None,
) -> Iterator[tuple[tuple[int, int, int, int], FloatArray, Letterbox]]:
    """``tile_inputs`` one region at a time, so the first can be run while the rest are made.

    The frame is resized once to the scale the smallest tiles need; every other
    scale is resized from that smaller image, and square tiles are 128x128
    windows cut out of the resized frame of their size (converted to RGB in
    [-1, 1] once per size), which costs far less than resizing every tile from
    the full frame.

    ``image_bgr`` may be the frame already reduced ``reduced_by`` times (a JPEG
    decoded at 1/2, 1/4 or 1/8 scale, see ``jpeg_reduction``); regions stay in
    full-frame pixels, and so do the ``Letterbox`` mappings yielded.  ``halvings``:
    those of ``image_bgr``, shared with the other inputs made from the frame (its
    own if None).
    """
    pyramid = halvings if halvings is not None else Halvings(image_bgr)
    if pyramid.level(0) is not image_bgr:
        raise ValueError("halvings must be those of the image the inputs are made from")
    height, width = image_bgr.shape[:2]
    square_sides = [w for _, _, w, h in regions if w == h]
    base_scale = min(1.0, max((INPUT_SIZE / side for side in square_sides), default=1.0))
    full_w, full_h = width * reduced_by, height * reduced_by
    base_size = (max(1, round(full_w * base_scale)), max(1, round(full_h * base_scale)))
    # the halvings first: the whole frame's input is made from them (by more halvings),
    # so the model can start on it while the rest of the resize to the tiles' scale is done
    reduced, factor = pyramid.for_size(base_size)
    factor *= reduced_by
    base: np.ndarray[Any, Any] | None = None
    by_side: dict[int, FloatArray] = {}
    for region in regions:
        x, y, w, h = region
        if w != h:
            rx, ry = round(x / factor), round(y / factor)
            rw, rh = max(1, round(w / factor)), max(1, round(h / factor))
            tensor, fit = letterbox(reduced[ry : ry + rh, rx : rx + rw])
            yield region, tensor, Letterbox(fit.scale / factor, fit.pad_x, fit.pad_y)
            continue
        if base is None:
            base = shrink(reduced, base_size)
        scale = INPUT_SIZE / w
        if w not in by_side:
            relative = scale / base_scale
            small = base
            if abs(relative - 1.0) > 1e-6:
                size = (
                    max(1, round(base.shape[1] * relative)),
                    max(1, round(base.shape[0] * relative)),
                )
                small = shrink(base, size)
            by_side[w] = to_unit_rgb(small)
        small_frame = by_side[w]
        sx, sy = round(x * scale), round(y * scale)
        window = small_frame[sy : sy + INPUT_SIZE, sx : sx + INPUT_SIZE]
        if window.shape[:2] == (INPUT_SIZE, INPUT_SIZE):
            tensor = np.ascontiguousarray(window)[np.newaxis]
        else:
            tensor = np.full((1, INPUT_SIZE, INPUT_SIZE, 3), -1.0, dtype=np.float32)
            tensor[0, : window.shape[0], : window.shape[1]] = window
        yield region, tensor, Letterbox(scale, 0.0, 0.0)


def to_unit_rgb(image_bgr: np.ndarray[Any, Any]) -> FloatArray:
    """A BGR uint8 image as RGB float32 in [-1, 1], the model's input range."""
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB).astype(np.float32)
    rgb *= 2.0 / 255.0
    rgb -= 1.0
    return rgb


def to_frame(
    box: FloatArray, score: float, fit: Letterbox, frame_hw: tuple[int, int]
) -> FaceBox | None:
    """Map a [0, 1] input box back to frame pixels, clipped; None if nothing is left."""
    height, width = frame_hw
    scale, pad_x, pad_y = fit.scale, fit.pad_x, fit.pad_y
    x0 = min(max((float(box[0]) * INPUT_SIZE - pad_x) / scale, 0.0), float(width))
    y0 = min(max((float(box[1]) * INPUT_SIZE - pad_y) / scale, 0.0), float(height))
    x1 = min(max((float(box[2]) * INPUT_SIZE - pad_x) / scale, 0.0), float(width))
    y1 = min(max((float(box[3]) * INPUT_SIZE - pad_y) / scale, 0.0), float(height))
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return FaceBox(x0, y0, x1 - x0, y1 - y0, score)
