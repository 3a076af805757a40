"""Tell a frame that shows nothing new from the one before it, cheaply.

A gate camera sends the same empty lane, or the same parked truck, many times
between arrivals.  ``UnchangedFrames`` keeps a small grey thumbnail (cell
means of ``CELL_PX`` pixel squares) of the last frame that was read and the
result read from it; a frame whose thumbnail differs from it nowhere by more
than ``max_cell_change`` grey levels gets that result again, without any model
call.  Cell means average sensor noise and JPEG noise away (a cell of 32x32
pixels divides pixel noise by 32), while a truck, a plate or a code moving in
changes many cells by tens of levels.  Thread-safe: one lock around the
remembered frame.
"""

from __future__ import annotations

import threading
from typing import Any, Generic, TypeVar

import cv2
import numpy as np

__all__ = ["CELL_PX", "UnchangedFrames", "thumbnail"]

CELL_PX = 32
Image = np.ndarray[Any, Any]
Result = TypeVar("Result")


def thumbnail(image_bgr: Image) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Grey cell means of ``CELL_PX`` squares (the frame's edges rounded up into cells)."""
    height, width = image_bgr.shape[:2]
    grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    size = (max(1, -(-width // CELL_PX)), max(1, -(-height // CELL_PX)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32)


class UnchangedFrames(Generic[Result]):
    """The last frame read and its result; ``lookup`` answers it again for the same scene."""

    def __init__(self, max_cell_change: float) -> None:
        self.max_cell_change = max_cell_change
        self._lock = threading.Lock()
        self._last: tuple[np.ndarray[Any, Any], Result] | None = None
        self.hits = 0  # frames answered from the remembered result

    def lookup(self, image_bgr: Image) -> tuple[np.ndarray[Any, Any], Result | None]:
        """The frame's thumbnail, and the remembered result if the scene did not change."""
        thumb = thumbnail(image_bgr)
        with self._lock:
            last = self._last
        if last is None or last[0].shape != thumb.shape:
            return thumb, None
        if float(np.abs(thumb - last[0]).max()) > self.max_cell_change:
            return thumb, None
        with self._lock:
            self.hits += 1
        return thumb, last[1]

    def remember(self, thumb: np.ndarray[Any, Any], result: Result) -> None:
        with self._lock:
            self._last = (thumb, result)

    def forget(self) -> None:
        with self._lock:
            self._last = None
