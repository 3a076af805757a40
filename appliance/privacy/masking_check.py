"""Checking that what leaves the site shows no face and no readable plate.

Two measures, both over frames whose truth is known (the synthetic yard camera's
plates and pasted faces):

* **masked**: the boxes the tasks found (the ones ``blurred_jpeg`` blurs, grown by
  its margin) cover a truth's box (``covered_fraction`` >= ``MASKED_COVERAGE``);
* **independent**: a second look at the blurred JPEG, not the pass that decided
  what to blur: the face detector on the released pixels and a different face
  detector (dlib's HOG, ``appliance.privacy.hog_faces``), and a reader made of
  the text detector at lower thresholds on a larger image plus the recognizer with
  no confidence floor, whose every read is searched for each plate string (one
  character wrong still counts as read).  Nothing may be found.

The check knows no truth (the demo and a real site have none), so it judges what
it finds on the pixels it sees: a box of the face detector counts only if those
pixels hold detail (``box_detail`` at least ``MIN_FACE_DETAIL``) and its sides lie
in ``FACE_SIDE_RANGE`` (fractions of the frame's width: a gate's faces), and no
more than ``MAX_FILL_SHARE`` of it is fill (``fill_fraction``: pixels as smooth as
only a fill is, without the camera's noise).  A face the release pass found lies
wholly under its fill (box and margin), so a box mostly over a fill is the fill's
edge against what is next to it (a container's letters, a stripe), not a face.  Nor
is a box whose grey levels split cleanly into two tones (``two_tone``, Otsu's
between-class share of the variance, above ``MAX_TWO_TONE``): light glyphs on a
dark container's paint, where BlazeFace scores digits as faces; the same holds
for the other detector's boxes (HOG at its permissive threshold found a face in
the digits "8428" of a released frame: two tones, 0.95).  BlazeFace
scores flat paint, dark truck fronts and the filled boxes themselves up to ~0.55,
on boxes mostly larger than a face at the gate; a face has eyes, brows and a mouth.
Larger faces are HOG's to find (frontal faces from 46 px up, any size).  False
alarms on face-free frames and recall on faces left in clear: docs/INFERENCE.md.

The tasks are passed in (``FaceAnonymizeTask``, ``GateOcrTask``), so this module
loads no model and names no file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np

from appliance.inference.results import TaskResult
from appliance.inference.text_detection import TextBox, crop_text
from appliance.inference.text_recognition import RecognizedText
from appliance.privacy.redaction import RELEASE_MARGIN, Box

__all__ = [
    "FACE_SIDE_RANGE",
    "INDEPENDENT_FACE_MIN_SCORE",
    "MASKED_COVERAGE",
    "MAX_FILL_SHARE",
    "MAX_TWO_TONE",
    "MIN_FACE_DETAIL",
    "IndependentCheck",
    "MaskingTally",
    "box_detail",
    "fill_fraction",
    "covered_fraction",
    "two_tone",
    "plate_read_in",
]

Image = np.ndarray[Any, Any]

MASKED_COVERAGE = 0.9  # of a truth's box under the blurred boxes for it to count as masked
BLUR_MARGIN = RELEASE_MARGIN  # blurred_jpeg's: each box grows by this on every side
INDEPENDENT_FACE_MIN_SCORE = 0.45  # the release pass uses 0.4, on the frame before release
FACE_SIDE_RANGE = (0.036, 0.15)  # of the frame's width: 46-192 px of a 1280 px frame
MAX_FILL_SHARE = 0.2  # of a face detector's box: real faces up to ~0.13, a fill's edge ~0.3
# of a face detector's box's grey-level variance between its two Otsu classes: true
# faces up to ~0.83, light digits on a dark container 0.79-0.97
MAX_TWO_TONE = 0.9
FILL_MAX_SD = 1.2  # grey-level spread in 5x5 pixels: a fill's ~0.7, the camera's noise 1.6 up
# grey levels of spread in a face box shrunk to 16x16 (noise averaged away), its linear
# shading taken out: fills and flat paint keep under ~5.5, true faces from ~8.7
MIN_FACE_DETAIL = 6.0
_DETAIL_SIDE = 16
_NOT_ALNUM = re.compile(r"[^0-9A-Z]")


class FaceFinder(Protocol):
    def run(self, image_bgr: Image) -> TaskResult: ...


class BoxFinder(Protocol):
    def faces(self, image_bgr: Image) -> list[Box]: ...


class TextReader(Protocol):
    def detect(self, image_bgr: Image) -> list[TextBox]: ...

    def recognize(self, crops: list[Image]) -> list[RecognizedText]: ...


def covered_fraction(truth: Box, boxes: Iterable[Box], margin: float = BLUR_MARGIN) -> float:
    """How much of ``truth`` lies under the union of ``boxes`` grown by ``margin``."""
    x, y, w, h = truth
    if w <= 0 or h <= 0:
        return 1.0
    covered = np.zeros((h, w), dtype=bool)
    for bx, by, bw, bh in boxes:
        gx, gy = int(bw * margin), int(bh * margin)
        x0, y0 = max(bx - gx - x, 0), max(by - gy - y, 0)
        x1, y1 = min(bx + bw + gx - x, w), min(by + bh + gy - y, h)
        if x1 > x0 and y1 > y0:
            covered[y0:y1, x0:x1] = True
    return float(covered.mean())


def box_detail(image_bgr: Image, box: Box) -> float:
    """The spread of grey levels in ``box`` once shrunk to 16x16 and its best plane
    (linear shading) removed: near 0 on a fill or flat paint, large on a face."""
    x, y, w, h = box
    height, width = image_bgr.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0.0
    grey = cv2.cvtColor(image_bgr[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY).astype(np.float32)
    small = cv2.resize(grey, (_DETAIL_SIDE, _DETAIL_SIDE), interpolation=cv2.INTER_AREA)
    ys, xs = np.mgrid[0:_DETAIL_SIDE, 0:_DETAIL_SIDE]
    plane = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], axis=1)
    coefficients, *_ = np.linalg.lstsq(plane, small.ravel(), rcond=None)
    return float((small.ravel() - plane @ coefficients).std())


def fill_fraction(image_bgr: Image, box: Box) -> float:
    """The share of ``box``'s pixels that are fill: whose 5x5 neighbourhood spreads
    less than ``FILL_MAX_SD`` grey levels (a fill is smooth; the camera adds noise)."""
    x, y, w, h = box
    height, width = image_bgr.shape[:2]
    x0, y0, x1, y1 = max(x - 2, 0), max(y - 2, 0), min(x + w + 2, width), min(y + h + 2, height)
    if x1 - x0 < 5 or y1 - y0 < 5:
        return 0.0
    grey = cv2.cvtColor(image_bgr[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY).astype(np.float32)
    mean = cv2.blur(grey, (5, 5))
    spread = np.sqrt(np.maximum(cv2.blur(grey * grey, (5, 5)) - mean * mean, 0.0))
    rows = slice(max(y, 0) - y0, min(y + h, height) - y0)
    inner = spread[rows, max(x, 0) - x0 : min(x + w, width) - x0]
    return float((inner < FILL_MAX_SD).mean()) if inner.size else 0.0


def two_tone(image_bgr: Image, box: Box) -> float:
    """How much of the grey-level variance in ``box`` lies between its two Otsu
    classes: near 1 for glyphs on flat paint, lower for a face's many tones."""
    x, y, w, h = box
    height, width = image_bgr.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0.0
    grey = cv2.cvtColor(image_bgr[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
    threshold, _ = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    levels = grey.astype(np.float32)
    dark, light = levels[levels <= threshold], levels[levels > threshold]
    variance = float(levels.var())
    if dark.size == 0 or light.size == 0 or variance <= 0.0:
        return 0.0
    share_dark = dark.size / levels.size
    between = share_dark * (1.0 - share_dark) * float(light.mean() - dark.mean()) ** 2
    return between / variance


def plate_read_in(plate: str, reads: Sequence[str]) -> bool:
    """Whether ``plate`` (spaces ignored) appears, one character wrong at most, in any
    read or in all reads joined in order."""
    wanted = _NOT_ALNUM.sub("", plate.upper())
    texts = [_NOT_ALNUM.sub("", read.upper()) for read in reads]
    for text in [*texts, "".join(texts)]:
        for start in range(max(0, len(text) - len(wanted)) + 1):
            window = text[start : start + len(wanted)]
            if len(window) == len(wanted) and sum(map(str.__ne__, window, wanted)) <= 1:
                return True
    return False


@dataclass(slots=True)
class MaskingTally:
    """Truths seen and masked, per kind, with every miss named."""

    faces: int = 0
    faces_masked: int = 0
    plates: int = 0
    plates_masked: int = 0
    misses: list[str] = field(default_factory=list)

    def add(self, frame: str, kind: str, value: str, masked: bool) -> None:
        if kind == "face":
            self.faces += 1
            self.faces_masked += masked
        else:
            self.plates += 1
            self.plates_masked += masked
        if not masked:
            self.misses.append(f"{frame}: {kind} {value}")

    @property
    def recall(self) -> float:
        total = self.faces + self.plates
        return 1.0 if total == 0 else (self.faces_masked + self.plates_masked) / total


class IndependentCheck:
    """A second look at a blurred frame: faces found, plates read (blocking).

    ``faces`` is the face task, whose boxes count if they are of a face's size at
    the gate (``side_range``), their pixels hold detail (``min_detail``), are not
    mostly fill and not two tones (``max_two_tone``);
    ``other_faces``, if given, a detector of another kind, whose faces are added
    unless they are two tones too."""

    def __init__(
        self,
        faces: FaceFinder,
        reader: TextReader,
        other_faces: BoxFinder | None = None,
        min_detail: float = MIN_FACE_DETAIL,
        side_range: tuple[float, float] = FACE_SIDE_RANGE,
        max_two_tone: float = MAX_TWO_TONE,
    ) -> None:
        self._faces = faces
        self._other_faces = other_faces
        self._reader = reader
        self.min_detail = min_detail
        self.side_range = side_range
        self.max_two_tone = max_two_tone

    def faces_found_by(self, image_bgr: Image) -> dict[str, list[Box]]:
        """Each detector's faces: ``model`` (the face task's), ``other`` (if given); a box
        of either whose grey levels are two tones is glyphs on paint, not a face."""
        boxes = [d.box for d in self._faces.run(image_bgr).detections if d.kind == "face"]
        low, high = (side * image_bgr.shape[1] for side in self.side_range)
        found = {
            "model": [
                box
                for box in boxes
                if low <= min(box[2:])
                and max(box[2:]) <= high
                and box_detail(image_bgr, box) >= self.min_detail
                and fill_fraction(image_bgr, box) <= MAX_FILL_SHARE
            ]
        }
        if self._other_faces is not None:
            found["other"] = self._other_faces.faces(image_bgr)
        return {
            name: [box for box in hits if two_tone(image_bgr, box) <= self.max_two_tone]
            for name, hits in found.items()
        }

    def faces_found(self, image_bgr: Image) -> list[Box]:
        return [box for boxes in self.faces_found_by(image_bgr).values() for box in boxes]

    def reads(self, image_bgr: Image) -> list[str]:
        boxes = self._reader.detect(image_bgr)
        if not boxes:
            return []
        texts = self._reader.recognize([crop_text(image_bgr, box) for box in boxes])
        order = sorted(range(len(boxes)), key=lambda i: (boxes[i].bounds[1], boxes[i].bounds[0]))
        return [texts[i].text for i in order if texts[i].text.strip()]

    def plates_read(self, image_bgr: Image, plates: Iterable[str]) -> list[str]:
        reads = self.reads(image_bgr)
        return [plate for plate in plates if plate_read_in(plate, reads)]
