"""PP-OCR text recognition (CRNN + CTC): crop batching and greedy CTC decoding.

The rec model takes a batch of crops resized to height 48 (width in
proportion, right-padded with zeros to the widest crop, at least 320), BGR
normalised to [-1, 1], and returns per-timestep class probabilities
(N, T, C).  Class 0 is the CTC blank; classes 1..C-2 are the characters of
the dictionary embedded in the ONNX metadata (key ``character``, one per
line); the last class is a space, as in PaddleOCR's ``use_space_char``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

__all__ = [
    "REC_HEIGHT",
    "REC_MIN_WIDTH",
    "CtcDecoder",
    "RecognizedText",
    "recognition_batch",
]

Image = np.ndarray[Any, Any]

REC_HEIGHT = 48
REC_MIN_WIDTH = 320


@dataclass(frozen=True, slots=True)
class RecognizedText:
    """One decoded line: the text and the mean probability of its characters."""

    text: str
    confidence: float


def recognition_batch(
    crops: Sequence[Image], min_width: int = REC_MIN_WIDTH
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Stack BGR crops into a (N, 3, 48, W) tensor; W fits the widest crop, at least
    ``min_width``."""
    ratios = [crop.shape[1] / max(crop.shape[0], 1) for crop in crops]
    batch_w = max(min_width, math.ceil(REC_HEIGHT * max(ratios, default=1.0)))
    batch = np.zeros((len(crops), 3, REC_HEIGHT, batch_w), dtype=np.float32)
    for i, (crop, ratio) in enumerate(zip(crops, ratios, strict=True)):
        width = min(batch_w, max(1, math.ceil(REC_HEIGHT * ratio)))
        resized = cv2.resize(crop, (width, REC_HEIGHT), interpolation=cv2.INTER_LINEAR)
        batch[i, :, :, :width] = (resized.astype(np.float32) * (2.0 / 255.0) - 1.0).transpose(
            2, 0, 1
        )
    return batch


class CtcDecoder:
    """Greedy CTC decoding against the model's character dictionary."""

    def __init__(self, characters: Sequence[str]) -> None:
        self.classes: tuple[str, ...] = ("", *characters, " ")

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> CtcDecoder:
        """Build from ONNX custom metadata; raises KeyError if there is no ``character`` entry."""
        return cls(metadata["character"].splitlines())

    def allowed_classes(self, charset: str) -> np.ndarray[Any, np.dtype[np.intp]]:
        """Class indices of blank plus every dictionary character in ``charset``."""
        wanted = set(charset)
        return np.array(
            [0, *(i for i, c in enumerate(self.classes) if i and c in wanted)], dtype=np.intp
        )

    def decode(
        self,
        probabilities: np.ndarray[Any, Any],
        allowed: np.ndarray[Any, np.dtype[np.intp]] | None = None,
    ) -> list[RecognizedText]:
        """Decode (N, T, C) probabilities: argmax, collapse repeats, drop blanks.

        With ``allowed`` (from ``allowed_classes``) the argmax is taken only over
        those classes: a boxed ``0`` then reads as ``0``, not as a CJK look-alike.
        """
        if probabilities.shape[-1] != len(self.classes):
            raise ValueError(
                f"model has {probabilities.shape[-1]} classes, dictionary {len(self.classes)}"
            )
        if allowed is not None:
            probabilities = probabilities[..., allowed]
        best = probabilities.argmax(axis=2)
        best_prob = probabilities.max(axis=2)
        if allowed is not None:
            best = allowed[best]
        results: list[RecognizedText] = []
        for indices, probs in zip(best, best_prob, strict=True):
            keep = indices != 0
            keep[1:] &= indices[1:] != indices[:-1]
            kept = indices[keep]
            text = "".join(self.classes[i] for i in kept)
            confidence = float(probs[keep].mean()) if kept.size else 0.0
            results.append(RecognizedText(text=text, confidence=confidence))
        return results
