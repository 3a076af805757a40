"""PP-OCR text detection (DB, "Differentiable Binarization"): pre- and post-processing.

The det model maps a normalised BGR image (N, 3, H, W), H and W multiples of
32, to a text probability map (N, 1, H, W).  The post-process written here
follows PaddleOCR/RapidOCR's ``DBPostProcess`` with their default values
(threshold 0.3, box threshold 0.5, unclip ratio 1.6, 2x2 dilation), with one
simplification: instead of offsetting the polygon with pyclipper, the
minimum-area rectangle is grown by the same distance ``area * ratio /
perimeter`` on every side, which is what offsetting a rectangle does up to
its rounded corners.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

__all__ = [
    "DetectionParams",
    "TextBox",
    "crop_text",
    "detect_boxes",
    "detection_input",
    "detection_size",
]

Image = np.ndarray[Any, Any]

_DILATE_KERNEL = np.ones((2, 2), dtype=np.uint8)
_MIN_SIDE = 3.0


@dataclass(frozen=True, slots=True)
class DetectionParams:
    """DB post-process parameters (defaults from RapidOCR)."""

    thresh: float = 0.3
    box_thresh: float = 0.5
    unclip_ratio: float = 1.6
    max_candidates: int = 1000


@dataclass(frozen=True, slots=True)
class TextBox:
    """A detected text region: four corners (tl, tr, br, bl) in source pixels, and its score."""

    points: np.ndarray[Any, np.dtype[np.float32]]  # shape (4, 2)
    score: float

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """Axis-aligned ``(x, y, width, height)`` around the corners."""
        x0, y0 = np.floor(self.points.min(axis=0)).astype(int)
        x1, y1 = np.ceil(self.points.max(axis=0)).astype(int)
        return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


def detection_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """The (H, W) the det model sees: longest side capped at ``max_side``, both multiples of 32."""
    scale = min(1.0, max_side / max(height, width))
    resized_h = max(32, round(height * scale / 32) * 32)
    resized_w = max(32, round(width * scale / 32) * 32)
    return resized_h, resized_w


def detection_input(
    image_bgr: Image, max_side: int, size: tuple[int, int] | None = None
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Resize and normalise (x/255 - 0.5) / 0.5 a BGR image into a (1, 3, H, W) tensor;
    (H, W) is ``detection_size`` unless ``size`` gives it."""
    height, width = image_bgr.shape[:2]
    det_h, det_w = size or detection_size(height, width, max_side)
    resized = cv2.resize(image_bgr, (det_w, det_h), interpolation=cv2.INTER_LINEAR)
    tensor = resized.astype(np.float32) * (2.0 / 255.0) - 1.0
    return np.ascontiguousarray(tensor.transpose(2, 0, 1)[np.newaxis])


def _order_corners(points: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Order 4 points as top-left, top-right, bottom-right, bottom-left."""
    by_x = points[np.argsort(points[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)


def _box_score(probability: Image, corners: np.ndarray[Any, Any]) -> float:
    """Mean text probability inside the box (RapidOCR's "fast" score mode)."""
    height, width = probability.shape
    x0 = int(np.clip(np.floor(corners[:, 0].min()), 0, width - 1))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()), 0, width - 1))
    y0 = int(np.clip(np.floor(corners[:, 1].min()), 0, height - 1))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()), 0, height - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    shifted = (corners - np.array([x0, y0], dtype=np.float32)).astype(np.int32)
    cv2.fillPoly(mask, [shifted], 1)
    return float(cv2.mean(probability[y0 : y1 + 1, x0 : x1 + 1], mask)[0])


def detect_boxes(
    probability: Image, source_hw: tuple[int, int], params: DetectionParams
) -> list[TextBox]:
    """Text boxes in source pixels from the (H, W) probability map, top-to-bottom, left-to-right."""
    map_h, map_w = probability.shape
    src_h, src_w = source_hw
    bitmap = cv2.dilate((probability > params.thresh).astype(np.uint8), _DILATE_KERNEL)
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    scale = np.array([src_w / map_w, src_h / map_h], dtype=np.float32)
    boxes: list[TextBox] = []
    for contour in contours[: params.max_candidates]:
        center, (rect_w, rect_h), angle = cv2.minAreaRect(contour)
        if min(rect_w, rect_h) < _MIN_SIDE:
            continue
        corners = _order_corners(cv2.boxPoints((center, (rect_w, rect_h), angle)))
        score = _box_score(probability, corners)
        if score < params.box_thresh:
            continue
        grow = rect_w * rect_h * params.unclip_ratio / (2.0 * (rect_w + rect_h))
        grown = (center, (rect_w + 2 * grow, rect_h + 2 * grow), angle)
        if min(grown[1]) < _MIN_SIDE + 2:
            continue
        corners = _order_corners(cv2.boxPoints(grown)) * scale
        corners[:, 0] = np.clip(corners[:, 0], 0, src_w - 1)
        corners[:, 1] = np.clip(corners[:, 1], 0, src_h - 1)
        boxes.append(TextBox(points=corners, score=score))
    boxes.sort(key=lambda b: (round(float(b.points[0, 1]) / 10), float(b.points[0, 0])))
    return boxes


def crop_text(image_bgr: Image, box: TextBox) -> Image:
    """The box's content warped upright into a rectangle (rotated 90 degrees if it is tall)."""
    tl, tr, br, bl = box.points
    width = int(max(np.linalg.norm(tl - tr), np.linalg.norm(bl - br)))
    height = int(max(np.linalg.norm(tl - bl), np.linalg.norm(tr - br)))
    width, height = max(width, 1), max(height, 1)
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(box.points, target)
    crop = cv2.warpPerspective(
        image_bgr,
        matrix,
        (width, height),
        borderMode=cv2.BORDER_REPLICATE,
        flags=cv2.INTER_CUBIC,
    )
    if height / width >= 1.5:
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop)
