"""A labelled evaluation set for gate OCR, generated deterministically and kept on disk.

``write_eval_set(directory, count=500, seed=...)`` renders frames with the
synthetic yard camera (``appliance.sources.synthetic``), one in four at
``difficulty="clean"`` and the rest ``"varied"`` (blur, rotation, noise,
lighting), with stacked and single-line container codes, and writes:

* ``frames/NNNNN.jpg``: each frame JPEG-encoded at quality 90, as a camera
  pushes it;
* ``labels.jsonl``: one line per frame: its file, sha256, difficulty,
  conditions and ground truths (kind, value, validity, box, layout);
* ``eval-set.json``: how the set was made (seed, count, camera options) and
  the sha256 of ``labels.jsonl``.

``load_eval_set(directory)`` reads it back and checks every file against its
sha256, so a report names exactly the frames it was measured on.  Seeds for
calibration or tuning must differ from the evaluation seed (``EVAL_SEED``):
the set is for measuring only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from appliance.errors import ApplianceError
from appliance.sources.synthetic import SyntheticYardCamera
from sync.shared.durable_file import replace_durably

__all__ = [
    "EVAL_SEED",
    "EvalFrame",
    "EvalSet",
    "EvalSetError",
    "LabelledText",
    "load_eval_set",
    "write_eval_set",
]

EVAL_SEED = 20_500  # the evaluation set's seed; calibration and tuning use others
_FORMAT = 1
_CLEAN_EVERY = 4  # frame i is "clean" when i % 4 == 0, else "varied"
_JPEG_QUALITY = 90

Difficulty = Literal["clean", "varied"]


class EvalSetError(ApplianceError):
    """An evaluation set directory is missing, incomplete or altered (not retryable)."""


@dataclass(frozen=True, slots=True)
class LabelledText:
    """One container code or plate the frame really shows."""

    kind: Literal["container_code", "plate"]
    value: str
    valid: bool
    box: tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class EvalFrame:
    """One labelled frame of the set."""

    index: int
    file: str  # relative to the set's directory
    sha256: str
    difficulty: Difficulty
    conditions: dict[str, float]
    texts: tuple[LabelledText, ...]
    stacked: bool  # the container code's owner is on its own line above the serial

    def code(self) -> LabelledText:
        return next(t for t in self.texts if t.kind == "container_code")

    def plate(self) -> LabelledText | None:
        return next((t for t in self.texts if t.kind == "plate"), None)


@dataclass(frozen=True, slots=True)
class EvalSet:
    """A loaded evaluation set: its directory, how it was made, and its frames."""

    directory: Path
    seed: int
    labels_sha256: str
    frames: tuple[EvalFrame, ...]

    def __len__(self) -> int:
        return len(self.frames)

    def jpeg(self, frame: EvalFrame) -> bytes:
        return (self.directory / frame.file).read_bytes()

    def jpegs(self) -> Iterator[tuple[EvalFrame, bytes]]:
        for frame in self.frames:
            yield frame, self.jpeg(frame)


def _camera(seed: int, difficulty: Difficulty) -> SyntheticYardCamera:
    return SyntheticYardCamera(seed=seed, difficulty=difficulty)


def _difficulty(index: int) -> Difficulty:
    return "clean" if index % _CLEAN_EVERY == 0 else "varied"


def write_eval_set(directory: Path, count: int = 500, seed: int = EVAL_SEED) -> EvalSet:
    """Render ``count`` labelled frames into ``directory`` (created; files replaced)."""
    if count < 1:
        raise EvalSetError(f"an evaluation set needs at least one frame, got {count}")
    frames_dir = directory / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    cameras = {d: _camera(seed, d) for d in ("clean", "varied")}
    lines: list[str] = []
    for index in range(count):
        difficulty = _difficulty(index)
        frame = cameras[difficulty].frame(index)
        jpeg = frame.encode(".jpg", _JPEG_QUALITY)
        name = f"frames/{index:05d}.jpg"
        replace_durably(directory / name, jpeg)
        texts = [
            LabelledText(t.kind, t.value, t.valid, t.box)  # type: ignore[arg-type]
            for t in frame.truths
        ]
        stacked = any(t.kind == "container_code" and t.layout == "stacked" for t in frame.truths)
        labelled = EvalFrame(
            index=index,
            file=name,
            sha256=hashlib.sha256(jpeg).hexdigest(),
            difficulty=difficulty,
            conditions=asdict(frame.conditions),
            texts=tuple(texts),
            stacked=stacked,
        )
        lines.append(json.dumps(asdict(labelled), sort_keys=True))
    labels = ("\n".join(lines) + "\n").encode()
    replace_durably(directory / "labels.jsonl", labels)
    manifest = {
        "format": _FORMAT,
        "generator": "appliance.inference.eval_set",
        "seed": seed,
        "count": count,
        "clean_every": _CLEAN_EVERY,
        "jpeg_quality": _JPEG_QUALITY,
        "camera": {"width": 1280, "height": 720},
        "labels_sha256": hashlib.sha256(labels).hexdigest(),
    }
    replace_durably(directory / "eval-set.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return load_eval_set(directory)


def _frame_from(line: dict[str, Any]) -> EvalFrame:
    texts = tuple(
        LabelledText(t["kind"], t["value"], bool(t["valid"]), tuple(t["box"]))  # type: ignore[arg-type]
        for t in line["texts"]
    )
    return EvalFrame(
        index=int(line["index"]),
        file=str(line["file"]),
        sha256=str(line["sha256"]),
        difficulty=line["difficulty"],
        conditions={k: float(v) for k, v in line["conditions"].items()},
        texts=texts,
        stacked=bool(line["stacked"]),
    )


def load_eval_set(directory: Path, *, verify_frames: bool = True) -> EvalSet:
    """Read a set written by ``write_eval_set``; ``EvalSetError`` if anything is off."""
    try:
        manifest = json.loads((directory / "eval-set.json").read_text())
        labels = (directory / "labels.jsonl").read_bytes()
    except (OSError, ValueError) as exc:
        raise EvalSetError(f"{directory} is not an evaluation set: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise EvalSetError(f"{directory}/eval-set.json: unknown format")
    if hashlib.sha256(labels).hexdigest() != manifest.get("labels_sha256"):
        raise EvalSetError(f"{directory}/labels.jsonl does not match eval-set.json")
    try:
        frames = tuple(_frame_from(json.loads(line)) for line in labels.splitlines() if line)
    except (ValueError, KeyError, TypeError) as exc:
        raise EvalSetError(f"{directory}/labels.jsonl is malformed: {exc}") from exc
    if len(frames) != manifest.get("count"):
        raise EvalSetError(f"{directory}: {len(frames)} labelled frames, manifest says otherwise")
    if verify_frames:
        for frame in frames:
            try:
                digest = hashlib.sha256((directory / frame.file).read_bytes()).hexdigest()
            except OSError as exc:
                raise EvalSetError(f"{directory}: frame {frame.file} unreadable: {exc}") from exc
            if digest != frame.sha256:
                raise EvalSetError(f"{directory}: frame {frame.file} does not match its sha256")
    return EvalSet(directory, int(manifest["seed"]), str(manifest["labels_sha256"]), frames)
