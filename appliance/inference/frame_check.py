"""The one frame format every task accepts: a BGR uint8 array of shape (H, W, 3)."""

from __future__ import annotations

from typing import Any

import numpy as np

from appliance.errors import BadFrame

__all__ = ["MIN_SIDE", "require_bgr_frame"]

MIN_SIDE = 16  # smaller frames carry nothing a model could read


def require_bgr_frame(image: Any) -> np.ndarray[Any, Any]:
    """Return ``image`` if it is a BGR uint8 (H, W, 3) frame; raise ``BadFrame`` saying why not."""
    if not isinstance(image, np.ndarray):
        raise BadFrame(f"a frame must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise BadFrame(f"a frame must be uint8 BGR, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise BadFrame(f"a frame must have shape (H, W, 3), got {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise BadFrame(f"frame {image.shape[1]}x{image.shape[0]} is smaller than {MIN_SIDE} px")
    return image
