"""A second face detector for the masking check: dlib's HOG frontal-face detector.

Not the detector that decided what to blur (BlazeFace, a neural network): a
histogram-of-oriented-gradients window scanned by a linear SVM over an image
pyramid, with its weights built into dlib.  So a face BlazeFace cannot see is not
also invisible to the check by construction.  It finds frontal faces from about
40 px with one upsampling (80 px without); run at a threshold below dlib's own 0
(permissive: a check should rather see too much).  dlib comes from the dev extra
(``dlib-bin``): the check runs in tests, benchmarks and the demo, not on a gateway.

Boxes narrower than ``HOG_MIN_SIDE_FRACTION`` of the frame's width are dropped: they
come from the pyramid's two smallest windows (37 and 44-45 px in a 1280 px frame),
which never framed a true face of the camera's (72-104 px faces give boxes from
52 px) and made every false alarm on face-free frames (digits, corrugation); a face
whose box is that small is under the smallest face the release pass is specified
for (``scan_face_fractions``, 5% of the width).  Boxes larger than a gate's face
(``masking_check.FACE_SIDE_RANGE``: over 15% of the width) count only at dlib's own
threshold (``HOG_LARGE_FACE_THRESHOLD``): the permissive threshold is for faces at
the gate's sizes, where a check must rather see too much; the one false alarm left
on face-free frames was a 463 px window over a container's corrugation at -0.45.
Measured in docs/INFERENCE.md.
"""

from __future__ import annotations

import importlib
from typing import Any

import cv2
import numpy as np

from appliance.errors import RuntimeUnavailable
from appliance.privacy.masking_check import FACE_SIDE_RANGE
from appliance.privacy.redaction import Box

__all__ = [
    "HOG_FACE_THRESHOLD",
    "HOG_LARGE_FACE_THRESHOLD",
    "HOG_MIN_SIDE_FRACTION",
    "HogFaceDetector",
]

HOG_FACE_THRESHOLD = -0.5  # dlib's detector reports faces scoring above 0 by default
HOG_LARGE_FACE_THRESHOLD = 0.0  # dlib's own, for a box larger than a gate's face
HOG_MIN_SIDE_FRACTION = 0.036  # of the frame's width: 46 px of a 1280 px frame


class HogFaceDetector:
    """Frontal faces by dlib's HOG detector, as ``(x, y, w, h)`` boxes (blocking)."""

    def __init__(
        self,
        threshold: float = HOG_FACE_THRESHOLD,
        upsample: int = 1,
        min_side_fraction: float = HOG_MIN_SIDE_FRACTION,
        large_side_fraction: float = FACE_SIDE_RANGE[1],
        large_threshold: float = HOG_LARGE_FACE_THRESHOLD,
    ) -> None:
        try:
            dlib = importlib.import_module("dlib")
        except ImportError as exc:
            raise RuntimeUnavailable(
                "the masking check's second face detector is dlib's: install the dev extra"
            ) from exc
        self._detector: Any = dlib.get_frontal_face_detector()
        self.threshold = threshold
        self.upsample = upsample
        self.min_side_fraction = min_side_fraction
        self.large_side_fraction = large_side_fraction
        self.large_threshold = large_threshold

    def faces(self, image_bgr: np.ndarray[Any, Any]) -> list[Box]:
        rgb = np.ascontiguousarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        rects, scores, _poses = self._detector.run(rgb, self.upsample, self.threshold)
        min_side = self.min_side_fraction * image_bgr.shape[1]
        large_side = self.large_side_fraction * image_bgr.shape[1]
        return [
            (r.left(), r.top(), r.width(), r.height())
            for r, score in zip(rects, scores, strict=True)
            if min(r.width(), r.height()) >= min_side
            and (max(r.width(), r.height()) <= large_side or score >= self.large_threshold)
        ]
