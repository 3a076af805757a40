"""Scans: BlazeFace run over the whole frame at a few scales, no tiles (no I/O).

BlazeFace's graph is fully convolutional: LiteRT resizes its input to any H x W
(multiples of 16), and it then returns one box per anchor of an (H/8 x W/8) x 2 +
(H/16 x W/16) x 6 grid, offsets in input pixels as on its 128x128 input.  So
rather than cutting the frame into overlapping 128 px tiles (every face must lie
whole in one, so tiles overlap by the largest face they look for: 2-4x the
pixels), the frame is resized once per scale and run in one window, or in a few
(one per model thread) that overlap only by the largest face the model finds.

A scan's scale follows from the smallest face it must find, as a fraction of the
frame's width: the model finds faces of about ``SMALLEST_FACE_INPUT`` to
``LARGEST_FACE_INPUT`` pixels of its input, so a scan at scale ``s`` finds faces
of ``32 / s`` to ``112 / s`` frame pixels, and scans a factor 2 apart cover every
size between them (docs/INFERENCE.md, "Scans").
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from appliance.inference.blazeface import (
    INPUT_SIZE,
    Halvings,
    Letterbox,
    ssd_anchors,
    to_unit_rgb,
)

__all__ = [
    "LARGEST_FACE_INPUT",
    "SMALLEST_FACE_INPUT",
    "ScanWindow",
    "iter_scan_inputs",
    "scan_anchors",
    "scan_scale",
    "scan_windows",
]

SMALLEST_FACE_INPUT = 32  # input pixels of the smallest face found reliably
LARGEST_FACE_INPUT = 112  # and of the largest; windows overlap by INPUT_SIZE (more)
WINDOW_PIXELS = 160_000  # a scan of more input pixels is cut into windows run side by side
_STRIDE = 16  # the coarsest feature map's stride: input sides are multiples of it

FloatArray = np.ndarray[Any, np.dtype[np.float32]]


@dataclass(frozen=True, slots=True)
class ScanWindow:
    """One model call of a scan: the frame resized by ``scale``, the window of it at
    ``(x, y)`` of ``width`` x ``height`` input pixels (padded past the frame's edge)."""

    scale: float
    x: int
    y: int
    width: int
    height: int

    def fit(self) -> Letterbox:
        """How to map the window's boxes back to frame pixels (``to_frame``)."""
        return Letterbox(self.scale, float(-self.x), float(-self.y))


def scan_scale(face_fraction: float, frame_width: int) -> float:
    """The scale (at most 1) at which a face of ``face_fraction`` of the frame's width
    is the smallest the model finds."""
    return min(1.0, SMALLEST_FACE_INPUT / (face_fraction * frame_width))


def _padded(side: int) -> int:
    return max(_STRIDE, math.ceil(side / _STRIDE) * _STRIDE)


def _starts(length: int, window: int, count: int) -> list[int]:
    if count == 1:
        return [0]
    step = (length - window) / (count - 1)
    return [round(i * step) for i in range(count)]


def scan_windows(
    height: int,
    width: int,
    face_fractions: Sequence[float],
    region: tuple[float, float, float, float] | None = None,
) -> list[ScanWindow]:
    """The windows of every scan of a ``height`` x ``width`` frame, largest scale first.

    A scan of more than ``WINDOW_PIXELS`` input pixels is cut along its longer side
    into the fewest windows of one size that each stay under it, overlapping by at
    least the model's input size, so a face lies whole in one of them.  ``region``
    (x, y, width, height as fractions of the frame): scan only that part of the
    frame (a site's opt-in: where faces can appear at its gate); None = the whole
    frame."""
    rx, ry, rw, rh = region if region is not None else (0.0, 0.0, 1.0, 1.0)
    windows: list[ScanWindow] = []
    scales = sorted({scan_scale(f, width) for f in face_fractions}, reverse=True)
    for scale in scales:
        scaled_w, scaled_h = max(1, round(width * scale)), max(1, round(height * scale))
        left, top = math.floor(rx * scaled_w), math.floor(ry * scaled_h)
        span_w = max(1, min(scaled_w, math.ceil((rx + rw) * scaled_w)) - left)
        span_h = max(1, min(scaled_h, math.ceil((ry + rh) * scaled_h)) - top)
        long_side, short_side = max(span_w, span_h), _padded(min(span_w, span_h))
        count, window = 1, _padded(long_side)
        while window * short_side > WINDOW_PIXELS and window > 2 * INPUT_SIZE:
            count += 1
            window = _padded(math.ceil((long_side + INPUT_SIZE * (count - 1)) / count))
        effective = scaled_w / width
        for start in _starts(max(long_side, window), window, count):
            if span_w >= span_h:
                windows.append(ScanWindow(effective, left + start, top, window, short_side))
            else:
                windows.append(ScanWindow(effective, left, top + start, short_side, window))
    return windows


def scan_anchors(height: int, width: int) -> FloatArray:
    """Anchor centres ``(N, 2)`` of an input of ``height`` x ``width``, in units of
    ``INPUT_SIZE`` pixels (so ``blazeface.decode`` and ``to_frame`` work unchanged)."""
    if (height, width) == (INPUT_SIZE, INPUT_SIZE):
        return ssd_anchors()
    centres = []
    for stride, per_cell in ((8, 2), (16, 6)):
        ys, xs = np.mgrid[0 : math.ceil(height / stride), 0 : math.ceil(width / stride)]
        cells = np.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(cells, per_cell, axis=0))
    return (np.concatenate(centres) / INPUT_SIZE).astype(np.float32)


def iter_scan_inputs(
    image_bgr: np.ndarray[Any, Any],
    windows: Sequence[ScanWindow],
    *,
    reduced_by: int = 1,
    halvings: Halvings | None = None,
) -> Iterator[tuple[ScanWindow, FloatArray]]:
    """Each window's model input ``(1, height, width, 3)``, RGB in [-1, 1], black past
    the frame's edge.  The frame is resized once per scale, every scale from the
    frame's halvings (``halvings``, of ``image_bgr``, shared with the other inputs
    made from the frame; its own if None), so a frame is halved once per level;
    ``image_bgr`` may be the frame already reduced ``reduced_by`` times (a smaller
    JPEG decode)."""
    height, width = image_bgr.shape[:2]
    pyramid = halvings if halvings is not None else Halvings(image_bgr)
    if pyramid.level(0) is not image_bgr:
        raise ValueError("halvings must be those of the image the inputs are made from")
    scaled: dict[float, FloatArray] = {}
    for window in windows:
        if window.scale not in scaled:
            full_w, full_h = width * reduced_by, height * reduced_by
            size = (max(1, round(full_w * window.scale)), max(1, round(full_h * window.scale)))
            if size[0] > width or size[1] > height:  # never, when reduced_by came from the task
                resized = cv2.resize(image_bgr, size, interpolation=cv2.INTER_LINEAR)
            else:
                resized = pyramid.shrink(size)
            scaled[window.scale] = to_unit_rgb(resized)
        frame = scaled[window.scale]
        tensor = np.full((1, window.height, window.width, 3), -1.0, dtype=np.float32)
        part = frame[window.y : window.y + window.height, window.x : window.x + window.width]
        tensor[0, : part.shape[0], : part.shape[1]] = part
        yield window, tensor
