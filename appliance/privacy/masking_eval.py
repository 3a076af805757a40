"""The masking evaluation (tests, ``bench.masking``): synthetic frames with plates and
real faces, the release pass (the real face and OCR tasks, ``blurred_jpeg``), then the
masked measure and the independent check on the JPEG that would leave."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.inference.face_anonymize import FACE_MODEL, FaceAnonymizeTask, load_face_anonymize
from appliance.inference.gate_ocr import DET_MODEL, REC_MODEL, GateOcrTask, load_gate_ocr
from appliance.inference.model_files import model_path
from appliance.inference.settings import FaceAnonymizeSettings, GateOcrSettings
from appliance.inference.tasks import TASKS
from appliance.privacy.hog_faces import HogFaceDetector
from appliance.privacy.masking_check import (
    INDEPENDENT_FACE_MIN_SCORE,
    MASKED_COVERAGE,
    IndependentCheck,
    MaskingTally,
    covered_fraction,
)
from appliance.privacy.raw_frames import blurred_jpeg
from appliance.sources.synthetic import SyntheticYardCamera

__all__ = ["Evaluation", "Models", "evaluate", "load_models"]


@dataclass
class Models:
    faces: FaceAnonymizeTask
    ocr: GateOcrTask
    check: IndependentCheck
    closing: list[FaceAnonymizeTask] = field(default_factory=list)

    def close(self) -> None:
        for task in self.closing:
            task.close()


def load_models(models_dir: Path) -> Models:
    """The release pass's tasks and the independent check's, from ``models_dir``."""
    faces = load_face_anonymize(FaceAnonymizeSettings(), model_path(FACE_MODEL, models_dir))
    ocr = load_gate_ocr(
        GateOcrSettings(), model_path(DET_MODEL, models_dir), model_path(REC_MODEL, models_dir)
    )
    second_faces = load_face_anonymize(
        FaceAnonymizeSettings(min_score=INDEPENDENT_FACE_MIN_SCORE),
        model_path(FACE_MODEL, models_dir),
    )
    reader = load_gate_ocr(  # larger image, lower thresholds, no confidence floor
        GateOcrSettings(det_max_side=1280, det_thresh=0.2, det_box_thresh=0.3),
        model_path(DET_MODEL, models_dir),
        model_path(REC_MODEL, models_dir),
    )
    check = IndependentCheck(second_faces, reader, HogFaceDetector())
    return Models(faces, ocr, check, [faces, second_faces])


@dataclass
class Evaluation:
    tally: MaskingTally
    faces_seen_after: list[str]  # frame: a true face the independent check still finds
    plates_read_after: list[str]  # frame: plate read by the independent check
    # frame: a box the independent check took for a face where no true face is (its
    # false alarms: the demo, which knows no truth, counts every face the check finds)
    other_faces_found: list[str] = field(default_factory=list)
    # the check itself, measured (``check=True``): faces it finds in the frames left in
    # clear (its recall), and what it finds in the same frames drawn without faces and
    # released (its false alarms)
    faces_in_clear: int = 0
    faces_found_in_clear: int = 0
    faces_missed_in_clear: list[str] = field(default_factory=list)
    face_free_frames: int = 0
    face_free_false_alarms: list[str] = field(default_factory=list)


def evaluate(models: Models, seed: int, count: int, check: bool = False) -> Evaluation:
    """The release pass and the independent check on ``count`` frames of the camera of
    ``seed``; ``check``: measure the check too (recall in clear, false alarms)."""
    camera = SyntheticYardCamera(seed)
    bare_camera = SyntheticYardCamera(seed, faces=False)  # the same frames, no face pasted
    tally = MaskingTally()
    faces_after: list[str] = []
    plates_after: list[str] = []
    others: list[str] = []
    evaluation = Evaluation(tally, faces_after, plates_after, others)
    for index in range(count):
        frame = camera.frame(index)
        image = _decoded(frame.encode())
        boxes = _release_boxes(models, image)
        name = f"seed {seed} frame {index}"
        if check:
            _measure_check(models, evaluation, name, image, frame.faces)
            bare = _decoded(bare_camera.frame(index).encode())
            released_bare = _decoded(blurred_jpeg(bare, _release_boxes(models, bare)))
            evaluation.face_free_frames += 1
            evaluation.face_free_false_alarms += [
                f"{name} without faces: {detector} {box}"
                for detector, found in models.check.faces_found_by(released_bare).items()
                for box in found
            ]
        plates = [t for t in frame.truths if t.kind == "plate"]
        for truth in [*frame.faces, *plates]:
            masked = covered_fraction(truth.box, boxes) >= MASKED_COVERAGE
            tally.add(name, truth.kind, truth.value, masked)
        released = _decoded(blurred_jpeg(image, boxes))
        found = models.check.faces_found(released)
        faces_after += [
            f"{name}: face {truth.value} at {truth.box}"
            for truth in frame.faces
            if any(_on(truth.box, box) for box in found)
        ]
        others += [
            f"{name}: {box}" for box in found if not any(_on(t.box, box) for t in frame.faces)
        ]
        read = models.check.plates_read(released, [t.value for t in plates])
        plates_after += [f"{name}: plate {plate}" for plate in read]
    return evaluation


def _release_boxes(models: Models, image: np.ndarray[Any, Any]) -> list[tuple[int, int, int, int]]:
    """What the release pass hides in a frame (as the pipeline's redaction policy)."""
    results = [models.faces.run(image), models.ocr.run(image)]
    hidden = TASKS.redaction_policy().hidden_kinds
    return [d.box for r in results for d in r.detections if d.kind in hidden]


def _measure_check(
    models: Models, evaluation: Evaluation, name: str, image: np.ndarray[Any, Any], faces: Any
) -> None:
    """The check on the frame released with nothing hidden: which true faces it finds."""
    in_clear = _decoded(blurred_jpeg(image, []))
    found = models.check.faces_found(in_clear)
    for truth in faces:
        evaluation.faces_in_clear += 1
        if any(_on(truth.box, box) for box in found):
            evaluation.faces_found_in_clear += 1
        else:
            evaluation.faces_missed_in_clear.append(f"{name}: face {truth.value} at {truth.box}")


def _on(truth: tuple[int, int, int, int], found: tuple[int, int, int, int]) -> bool:
    """Whether a box the check found lies on a true face (over 30% of it)."""
    return covered_fraction(truth, [found], margin=0.0) > 0.3


def _decoded(jpeg: bytes) -> np.ndarray[Any, Any]:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("a JPEG the evaluation made itself cannot be decoded")
    return image
