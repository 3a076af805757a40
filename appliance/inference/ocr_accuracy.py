"""Score gate OCR against a labelled evaluation set: accuracy per difficulty, time per frame.

A container code counts as read when the task reports exactly its 11
characters with the check-digit verdict the label has (a wrong check digit
must be reported invalid).  A plate counts as read when the site's HMAC token
of what the task read equals the token of the label (``PlateTokenizer``), the
way plates are compared once they leave the reader.  A container code read
that is not the frame's is a false code.

Time per frame is measured twice: wall time and the CPU time of the whole
process over the call (``time.process_time``: ONNX Runtime's own threads
included), so a loaded machine shows as wall time above CPU time.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from appliance.inference.eval_set import EvalFrame, EvalSet
from appliance.inference.results import TaskResult
from appliance.privacy.tokens import PlateTokenizer

__all__ = ["FrameScore", "OcrScore", "frame_groups", "score_frame", "score_task"]

Image = np.ndarray[Any, Any]
RunFrame = Callable[[Image], TaskResult]


@dataclass(frozen=True, slots=True)
class FrameScore:
    """One frame: what was right, and what it cost."""

    index: int
    code_read: bool
    plate_read: bool | None  # None: the frame shows no plate
    false_codes: int
    wall_ms: float
    cpu_ms: float


def frame_groups(frame: EvalFrame) -> list[str]:
    """The difficulty groups a frame belongs to (a frame can be in several)."""
    c = frame.conditions
    groups = [frame.difficulty, "stacked" if frame.stacked else "single_line"]
    if c["blur_sigma"] > 0:
        groups.append("blur")
    if abs(c["rotation_deg"]) >= 3.0:
        groups.append("rotation_3deg_plus")
    if c["noise_sigma"] >= 6.0:
        groups.append("noise_6_plus")
    if c["gain"] < 0.8 or c["gain"] > 1.15:
        groups.append("lighting_extreme")
    if not frame.code().valid:
        groups.append("invalid_check_digit")
    return groups


def score_frame(
    frame: EvalFrame, result: TaskResult, tokenizer: PlateTokenizer
) -> tuple[bool, bool | None, int]:
    """(code read, plate read or None, false codes) of one task result."""
    code = frame.code()
    codes = [(d.value, d.valid) for d in result.detections if d.kind == "container_code"]
    code_read = (code.value, code.valid) in codes
    false_codes = sum(1 for value, _ in codes if value != code.value)
    plate = frame.plate()
    plate_read: bool | None = None
    if plate is not None:
        wanted = tokenizer.token(plate.value)
        plate_read = any(
            tokenizer.token(d.value) == wanted for d in result.detections if d.kind == "plate"
        )
    return code_read, plate_read, false_codes


@dataclass
class OcrScore:
    """Accuracy and time over a set of frames, overall and per difficulty group."""

    frames: list[FrameScore] = field(default_factory=list)
    groups: dict[int, list[str]] = field(default_factory=dict)

    def add(self, frame: EvalFrame, score: FrameScore) -> None:
        self.frames.append(score)
        self.groups[score.index] = frame_groups(frame)

    @staticmethod
    def _rates(frames: list[FrameScore]) -> dict[str, float | int]:
        plates = [f.plate_read for f in frames if f.plate_read is not None]
        return {
            "frames": len(frames),
            "code_accuracy": sum(f.code_read for f in frames) / max(len(frames), 1),
            "plates": len(plates),
            "plate_accuracy": sum(plates) / max(len(plates), 1),
            "false_codes": sum(f.false_codes for f in frames),
        }

    def summary(self) -> dict[str, Any]:
        wall = [f.wall_ms for f in self.frames]
        cpu = [f.cpu_ms for f in self.frames]
        names = sorted({g for groups in self.groups.values() for g in groups})
        return {
            **self._rates(self.frames),
            "wall_ms": _percentiles(wall),
            "cpu_ms": _percentiles(cpu),
            "by_group": {
                name: self._rates([f for f in self.frames if name in self.groups[f.index]])
                for name in names
            },
        }


def _percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"p50": 0.0, "p99": 0.0, "mean": 0.0}
    array = np.asarray(samples)
    return {
        "p50": round(float(np.percentile(array, 50)), 3),
        "p99": round(float(np.percentile(array, 99)), 3),
        "mean": round(float(array.mean()), 3),
    }


def decoded_frames(eval_set: EvalSet) -> Iterator[tuple[EvalFrame, Image]]:
    """Every frame of the set, decoded from its JPEG (full size, BGR)."""
    for frame, jpeg in eval_set.jpegs():
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{frame.file} is not a decodable JPEG")
        yield frame, image


def score_task(
    run: RunFrame,
    eval_set: EvalSet,
    tokenizer: PlateTokenizer | None = None,
    limit: int | None = None,
) -> OcrScore:
    """Run ``run`` on every frame (or the first ``limit``) and score it."""
    tokenizer = tokenizer or PlateTokenizer(secrets.token_bytes(32))
    score = OcrScore()
    for count, (frame, image) in enumerate(decoded_frames(eval_set)):
        if limit is not None and count >= limit:
            break
        wall, cpu = time.perf_counter(), time.process_time()
        result = run(image)
        wall_ms = (time.perf_counter() - wall) * 1000.0
        cpu_ms = (time.process_time() - cpu) * 1000.0
        code_read, plate_read, false_codes = score_frame(frame, result, tokenizer)
        score.add(
            frame, FrameScore(frame.index, code_read, plate_read, false_codes, wall_ms, cpu_ms)
        )
    return score
