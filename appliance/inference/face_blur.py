"""Hiding boxes of a frame (faces, plates, text) beyond recognition (no I/O).

Three methods, none of which changes a pixel outside the (grown) boxes:

* ``pixelate``: the box averaged into at most 6x6 blocks, their edges smoothed;
* ``gaussian``: a Gaussian blur with a kernel about half the box's size;
* ``fill``: the box painted with a smooth blend of what surrounds it (a heavy blur
  of the surroundings, the box itself left out), so no pixel of what was in the box
  is used at all.  A face detector still scores a pixelated or Gaussian-blurred
  face as a face now and then (the blob of a head keeps its shape); a filled box
  holds no face shape to find (docs/INFERENCE.md, "Faces and plates in the pixels").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import cv2
import numpy as np

__all__ = ["BlurMethod", "blur_faces"]

Image = np.ndarray[Any, Any]
BlurMethod = Literal["pixelate", "gaussian", "fill"]

_PIXEL_BLOCKS = 6  # a pixelated face is at most 6x6 flat blocks across its longer side
_FILL_CELLS = 16  # the fill is worked out on a grid of this many cells across the box


def blur_faces(
    image_bgr: Image,
    boxes: Iterable[tuple[int, int, int, int]],
    *,
    margin: float = 0.25,
    method: BlurMethod = "pixelate",
) -> Image:
    """A copy of ``image_bgr`` with each ``(x, y, w, h)`` box, grown by ``margin``, hidden
    by ``method`` (see the module's docstring)."""
    out = image_bgr.copy()
    height, width = out.shape[:2]
    for x, y, w, h in boxes:
        grow_x, grow_y = int(w * margin), int(h * margin)
        x0, y0 = max(0, x - grow_x), max(0, y - grow_y)
        x1, y1 = min(width, x + w + grow_x), min(height, y + h + grow_y)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        if method == "fill":
            _fill_from_surroundings(out, x0, y0, x1, y1)
            continue
        region = out[y0:y1, x0:x1]
        if method == "pixelate":
            block = max(x1 - x0, y1 - y0) / _PIXEL_BLOCKS
            small_w = max(1, round((x1 - x0) / block))
            small_h = max(1, round((y1 - y0) / block))
            small = cv2.resize(region, (small_w, small_h), interpolation=cv2.INTER_AREA)
            blurred = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
            kernel = max(3, int(block) // 2 * 2 + 1)
            blurred = cv2.GaussianBlur(blurred, (kernel, kernel), 0)
        else:
            kernel = max(3, max(x1 - x0, y1 - y0) // 2 * 2 + 1)
            blurred = cv2.GaussianBlur(region, (kernel, kernel), 0)
        out[y0:y1, x0:x1] = blurred
    return out


def _fill_from_surroundings(out: Image, x0: int, y0: int, x1: int, y1: int) -> None:
    """Paint ``out[y0:y1, x0:x1]`` (in place) with a normalized Gaussian blur of the
    pixels around it, up to one box side away, the box itself weighted zero.  Worked
    out on a coarse grid (``_FILL_CELLS`` across the box) and scaled back up: the
    result is smooth anyway, and it costs a fraction of the ``gaussian`` method's
    large kernel (docs/INFERENCE.md)."""
    height, width = out.shape[:2]
    side = max(x1 - x0, y1 - y0)
    cx0, cy0 = max(0, x0 - side), max(0, y0 - side)
    cx1, cy1 = min(width, x1 + side), min(height, y1 + side)
    context = out[cy0:cy1, cx0:cx1]
    outside = np.ones(context.shape[:2], np.float32)
    outside[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0] = 0.0
    if not outside.any():  # the box is the whole frame: nothing around it to blend
        out[y0:y1, x0:x1] = context.reshape(-1, context.shape[2]).mean(axis=0).astype(out.dtype)
        return
    cell = max(1.0, side / _FILL_CELLS)
    grid = (max(1, round((cx1 - cx0) / cell)), max(1, round((cy1 - cy0) / cell)))
    # the pixels outside only (inside ones zeroed before any averaging), then
    # blur(weights x pixels) / blur(weights): a mean of what lies around the box
    masked = context.astype(np.float32) * outside[..., None]
    weighted = cv2.resize(masked, grid, interpolation=cv2.INTER_AREA).reshape(grid[1], grid[0], -1)
    weights = cv2.resize(outside, grid, interpolation=cv2.INTER_AREA)
    sigma = _FILL_CELLS / 2
    weighted = cv2.GaussianBlur(weighted, (0, 0), sigma).reshape(grid[1], grid[0], -1)
    weights = cv2.GaussianBlur(weights, (0, 0), sigma)
    mean_around = weighted / np.maximum(weights, 1e-6)[..., None]
    fill = cv2.resize(mean_around, (cx1 - cx0, cy1 - cy0), interpolation=cv2.INTER_LINEAR)
    inside = fill.reshape(cy1 - cy0, cx1 - cx0, -1)[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0]
    region = out[y0:y1, x0:x1]
    region[...] = np.clip(inside + 0.5, 0, 255).astype(out.dtype).reshape(region.shape)
