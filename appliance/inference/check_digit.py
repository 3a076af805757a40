"""Find the boxed ISO 6346 check digit next to a container code the detector read.

Container codes print the check digit in a rectangle to the right of the
serial number (``MSCU 123456 [7]``).  Text detectors often miss that lone
boxed digit, or the box outline turns it into a CJK look-alike in
recognition.  When a line reads as a 10-character prefix (owner, category,
serial) this module cuts candidate crops from the region to its right: the
inside of the box outline, and character-sized windows along the line.  The
caller reads them with a digits-only decode.  Pure image processing, no
model calls.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

__all__ = ["check_digit_candidates", "check_digit_crops", "warp_upright"]

Image = np.ndarray[Any, Any]

_SEARCH_WIDTH = 2.2  # heights of the prefix text to look to the right
_VERTICAL_MARGIN = 0.6  # of the text height, above and below (the box is taller)
_INTERIOR = 0.84  # of the box outline kept, so its strokes are cut away
_WINDOW_WIDTH = 0.75  # sliding windows, in heights of the prefix text box
_WINDOW_HEIGHT = 0.8
_WINDOW_STEP = 0.25


def check_digit_candidates(image_bgr: Image, prefix_box: tuple[int, int, int, int]) -> list[Image]:
    """Crops that may hold the check digit right of ``prefix_box`` (x, y, w, h).

    First the inside of a box outline found in the search region (when one is
    found), then windows the size of one character slid along the text line,
    for boxes too thin or too broken to find.  The caller reads them all with
    a digits-only decode and keeps the most confident single digit.
    """
    interior, windows = check_digit_crops(image_bgr, prefix_box)
    return windows if interior is None else [interior, *windows]


def check_digit_crops(
    image_bgr: Image, prefix_box: tuple[int, int, int, int]
) -> tuple[Image | None, list[Image]]:
    """``check_digit_candidates`` split in two: the box interior (or None), the windows."""
    x, y, w, h = prefix_box
    height, width = image_bgr.shape[:2]
    x0 = min(width, x + w)
    x1 = min(width, x + w + int(_SEARCH_WIDTH * h))
    y0 = max(0, y - int(_VERTICAL_MARGIN * h))
    y1 = min(height, y + h + int(_VERTICAL_MARGIN * h))
    if x1 - x0 < h // 3 or y1 - y0 < 8:
        return None, []
    interior = _box_interior(image_bgr[y0:y1, x0:x1])
    windows = []
    win_w, win_h = int(_WINDOW_WIDTH * h), int(_WINDOW_HEIGHT * h)
    top = max(0, y + (h - win_h) // 2)
    bottom = min(height, top + win_h)
    step = max(1, int(_WINDOW_STEP * h))
    for left in range(x0 + step // 2, x1 - win_w + 1, step):
        if bottom - top >= 8:
            windows.append(image_bgr[top:bottom, left : left + win_w])
    return interior, windows


def _box_interior(crop: Image) -> Image | None:
    """The inside of the largest 4-sided outline in ``crop``, upright, or None."""
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    smooth = cv2.GaussianBlur(gray, (5, 5), 0)
    # Two views of the outline: edges (works on plain paint) and the ink mask from an Otsu
    # threshold (works when corrugation stripes cross the box and break the edge contour).
    edges = cv2.dilate(cv2.Canny(smooth, 30, 90), np.ones((3, 3), np.uint8))
    _, ink = cv2.threshold(smooth, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if ink.mean() > 127:  # ink is the minority of the pixels
        ink = 255 - ink
    contours = [
        *cv2.findContours(edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)[0],
        *cv2.findContours(ink, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0],
    ]
    min_area = 0.08 * crop.shape[0] * crop.shape[1]
    best: tuple[float, Any] | None = None
    for contour in contours:
        approx = cv2.approxPolyDP(contour, 0.06 * cv2.arcLength(contour, True), True)
        if len(approx) != 4 or not cv2.isContourConvex(approx):
            continue
        area = cv2.contourArea(approx)
        (_, _), (w, h), _ = cv2.minAreaRect(approx)
        if area < min_area or min(w, h) < 0.5 * max(w, h):
            continue
        if best is None or area > best[0]:
            best = (area, cv2.minAreaRect(approx))
    if best is None:
        return None
    centre, (w, h), angle = best[1]
    inner = cv2.boxPoints((centre, (w * _INTERIOR, h * _INTERIOR), angle))
    return warp_upright(crop, inner)


def warp_upright(image: Image, corners: np.ndarray[Any, Any]) -> Image:
    """The quadrilateral ``corners`` (any order) of ``image`` warped to an upright rectangle."""
    by_y = corners[np.argsort(corners[:, 1])]
    top = by_y[:2][np.argsort(by_y[:2, 0])]
    bottom = by_y[2:][np.argsort(by_y[2:, 0])]
    ordered = np.array([top[0], top[1], bottom[1], bottom[0]], dtype=np.float32)
    width = int(
        max(np.linalg.norm(ordered[0] - ordered[1]), np.linalg.norm(ordered[3] - ordered[2]))
    )
    height = int(
        max(np.linalg.norm(ordered[0] - ordered[3]), np.linalg.norm(ordered[1] - ordered[2]))
    )
    width, height = max(width, 2), max(height, 2)
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(ordered, target)
    return cv2.warpPerspective(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)
