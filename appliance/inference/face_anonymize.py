"""The ``face_anonymize`` task: find faces with BlazeFace on LiteRT, and blur them.

``FaceAnonymizeTask.run`` returns the faces as ``Detection(kind="face")`` and the
boxes it scores just under ``min_score`` (from ``hide_min_score`` up) as
``Detection(kind="face_unsure")``: both are hidden in what leaves the site, so a
face the model is unsure of fails closed (filled), only the first count as faces;
``blur_faces(image, boxes)`` (``appliance.inference.face_blur``) returns a copy
of the frame with every box (grown by a margin) hidden beyond recognition.  The
daemon blurs every frame that may leave the site.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from queue import SimpleQueue
from typing import Any

import numpy as np

from appliance.errors import ModelLoadError
from appliance.inference.blazeface import (
    INPUT_SIZE,
    FaceBox,
    Halvings,
    Letterbox,
    decode,
    iter_tile_inputs,
    jpeg_reduction,
    tile_regions,
    to_frame,
    union_merge,
    weighted_nms,
)
from appliance.inference.face_blur import blur_faces
from appliance.inference.face_model_threads import (
    ModelsByShape,
    ModelThreads,
    Outputs,
    Replies,
    outputs_of,
)
from appliance.inference.face_scan import (
    ScanWindow,
    iter_scan_inputs,
    scan_anchors,
    scan_windows,
)
from appliance.inference.frame_change import UnchangedFrames
from appliance.inference.frame_check import require_bgr_frame
from appliance.inference.model_files import MODEL_FILES
from appliance.inference.results import Detection, TaskResult
from appliance.inference.runtimes import LoadedModel, load_model
from appliance.inference.settings import FaceAnonymizeSettings

__all__ = [
    "FACE",
    "FACE_MODEL",
    "HIDDEN_KINDS",
    "UNSURE_FACE",
    "FaceAnonymizeTask",
    "blur_faces",
    "load_face_anonymize",
]

FACE_MODEL = "face_detection_short_range.tflite"
FACE = "face"
# a box the model scores from ``hide_min_score`` up to ``min_score``: not counted as a
# face, hidden like one in what leaves the site (a grey or small face scored just under)
UNSURE_FACE = "face_unsure"
HIDDEN_KINDS = frozenset({FACE, UNSURE_FACE})

Image = np.ndarray[Any, Any]


def _model_version() -> str:
    spec = next(m for m in MODEL_FILES if m.name == FACE_MODEL)
    return f"{spec.requirement.split('==')[1]}+{spec.sha256[:8]}"


Region = tuple[int, int, int, int]
_TILE_CACHE_SIZES = 16  # frame sizes whose tile regions are kept (cameras send a few)


class FaceAnonymizeTask:
    """Faces in a BGR frame (BlazeFace short range: faces within a few metres)."""

    name = "face_anonymize"
    model_name = "mediapipe-face-short-range"

    def __init__(self, models: Sequence[LoadedModel], settings: FaceAnonymizeSettings) -> None:
        """``models``: interpreters of the same model file, one per parallel model thread."""
        if not models:
            raise ValueError("FaceAnonymizeTask needs at least one model")
        self.models = tuple(models)
        self.model = self.models[0]  # model_calls (benchmarks) names it
        self.settings = settings
        self.model_version = _model_version()
        self._anchors: dict[tuple[int, int], Any] = {}  # input (height, width) -> anchors
        self._input = self.model.inputs[0].name
        names = self.model.output_names
        # Outputs are told apart by width: 16 regressors vs 1 logit per anchor.
        self._regressors = next(n for n in names if "regressor" in n) if len(names) == 2 else ""
        self._classifiers = next(n for n in names if n != self._regressors) if names else ""
        self._by_shape = tuple(ModelsByShape(model, settings) for model in self.models)
        self._model_threads = ModelThreads(self._by_shape, self._input)
        self._tile_cache: dict[tuple[int, int], list[Region]] = {}
        self._window_cache: dict[tuple[int, int], list[ScanWindow]] = {}
        max_change = settings.skip_unchanged_max_change
        self.unchanged: UnchangedFrames[list[Detection]] | None = (
            None if max_change is None else UnchangedFrames(max_change)
        )

    @property
    def urgent(self) -> bool:
        """A frame's run is urgent work (``appliance.inference.urgent_work``): its faces
        gate the frame's release, and it is short."""
        return self.settings.urgent

    def close(self) -> None:
        """Stop the threads that run the model (``run`` starts them again if called)."""
        self._model_threads.close()

    def _tiles(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """The regions of a ``height`` x ``width`` frame, in its pixels (worked out once
        per frame size: ``jpeg_reduction`` and ``run`` both ask, for every frame)."""
        regions = self._tile_cache.get((height, width))
        if regions is None:
            if len(self._tile_cache) >= _TILE_CACHE_SIZES:
                self._tile_cache.clear()
            fractions, overlap = self.settings.tile_fractions, self.settings.tile_overlap
            regions = tile_regions(height, width, fractions, overlap)
            self._tile_cache[(height, width)] = regions
        return list(regions)

    def _windows(self, height: int, width: int) -> list[ScanWindow]:
        """The scan windows of a ``height`` x ``width`` frame (worked out once per size)."""
        windows = self._window_cache.get((height, width))
        if windows is None:
            if len(self._window_cache) >= _TILE_CACHE_SIZES:
                self._window_cache.clear()
            windows = scan_windows(
                height, width, self.settings.scan_face_fractions, self.settings.scan_region
            )
            self._window_cache[(height, width)] = windows
        return windows

    def _regions(self, image_bgr: Image, reduced_by: int = 1) -> list[Region]:
        height, width = image_bgr.shape[:2]
        return self._tiles(height * reduced_by, width * reduced_by)

    def jpeg_reduction(self, width: int, height: int) -> int:
        """How many times smaller (1, 2, 4 or 8) a ``width`` x ``height`` JPEG may be
        decoded for ``run(image, reduced_by=...)`` to find the same faces: every tile
        is shrunk to 128 px and every scan to its scale anyway, so the finest needs
        only so many pixels."""
        by_tiles = jpeg_reduction(height, width, self._tiles(height, width))
        finest = max((w.scale for w in self._windows(height, width)), default=0.0)
        return next(d for d in (8, 4, 2, 1) if by_tiles % d == 0 and finest * d <= 1.0 + 1e-9)

    def _inputs(
        self, image_bgr: Image, reduced_by: int = 1
    ) -> Iterator[tuple[Region, Image, Letterbox]]:
        """Every model input of a frame, ``(region, tensor, fit)``: the scan windows
        (largest first, so both model threads start on the long calls), then the whole
        frame and the tiles.  A scan window's boxes map back into the whole frame."""
        height, width = (side * reduced_by for side in image_bgr.shape[:2])
        windows = self._windows(height, width)
        halvings = Halvings(image_bgr)  # every input shrinks from them: each made once
        scans = (
            ((0, 0, width, height), tensor, window.fit())
            for window, tensor in iter_scan_inputs(
                image_bgr, windows, reduced_by=reduced_by, halvings=halvings
            )
        )
        tiles = iter_tile_inputs(
            image_bgr, self._tiles(height, width), reduced_by=reduced_by, halvings=halvings
        )
        return itertools.chain(scans, tiles)

    def model_calls(self, image_bgr: Image) -> list[tuple[LoadedModel, dict[str, Image]]]:
        """Every model call ``run`` makes for this frame, with its exact input (benchmarks).

        Each is given with the first model thread's interpreter for its input shape
        (``self.model`` for 128x128); ``run`` spreads them over the model threads, each
        with interpreters of its own of the same file, whichever is free first."""
        return [
            (self._by_shape[0].get(tensor.shape), {self._input: tensor})
            for _, tensor, _ in self._inputs(image_bgr)
        ]

    def _faces_in(
        self, outputs: dict[str, Image], fit: Letterbox, region: Region, input_hw: tuple[int, int]
    ) -> list[FaceBox]:
        """Faces in frame pixels from one detector pass on one region or scan window:
        those from ``min_score`` up, and apart from them (merged among themselves only,
        so the faces are exactly those a pass at ``min_score`` finds) those from
        ``hide_min_score`` up to it."""
        anchors = self._anchors.get(input_hw)
        if anchors is None:
            anchors = self._anchors[input_hw] = scan_anchors(*input_hw)
        min_score = self.settings.min_score
        boxes, scores = decode(
            outputs[self._regressors],
            outputs[self._classifiers],
            anchors,
            min(min_score, self.settings.hide_min_score),
        )
        if not len(scores):
            return []
        x, y, w, h = region
        found = []
        sure = scores >= min_score
        for group in (sure, ~sure):
            for box, score in weighted_nms(boxes[group], scores[group], self.settings.nms_iou):
                face = to_frame(box, score, fit, (h, w))
                if face is not None:
                    found.append(FaceBox(face.x + x, face.y + y, face.width, face.height, score))
        return found

    def _detect(self, image_bgr: Image, reduced_by: int = 1) -> list[FaceBox]:
        """Faces of every region, unmerged, in full-frame pixels, in region order.

        The model runs in helper threads (``invoke`` releases the GIL), as many as
        ``self.models``, while this thread makes the next regions' inputs and decodes
        the outputs already there; outputs are decoded in region order whatever
        order the calls finish in, so the faces do not depend on the threads.  Even
        a one-region frame goes to them: only a model thread ever runs an
        interpreter, so callers on several threads never share one.
        """
        inputs = self._inputs(image_bgr, reduced_by)
        # One reply queue per call: a reply left behind by an error goes away with it.
        replies: Replies = SimpleQueue()
        sent: list[tuple[Region, Letterbox, tuple[int, int]]] = []
        arrived: dict[int, Outputs | BaseException] = {}
        found: list[FaceBox] = []
        decoded = received = 0

        def receive() -> None:
            """Take one reply; decode every reply now next in region order."""
            nonlocal decoded, received
            index, reply = replies.get()
            received += 1
            arrived[index] = reply
            while decoded in arrived:
                region, fit, input_hw = sent[decoded]
                outputs = outputs_of(arrived.pop(decoded))
                found.extend(self._faces_in(outputs, fit, region, input_hw))
                decoded += 1

        try:
            for region, tensor, fit in inputs:
                self._model_threads.submit(len(sent), tensor, replies)
                sent.append((region, fit, (tensor.shape[1], tensor.shape[2])))
                while not replies.empty():  # decode what is done while the model runs
                    receive()
            while decoded < len(sent):
                receive()
        except BaseException:
            # Wait out this frame's calls still queued or running before the error
            # leaves: none may run on after it (an interpreter serves one call at a time).
            while received < len(sent):
                replies.get()
                received += 1
            raise
        return found

    def faces(self, image_bgr: Image, reduced_by: int = 1) -> list[FaceBox]:
        """Faces in frame pixels, best first: whole frame plus tiles, merged across tiles.

        ``reduced_by``: ``image_bgr`` is the frame decoded that many times smaller
        (see ``jpeg_reduction``); the faces are still in full-frame pixels."""
        return self.faces_and_unsure(image_bgr, reduced_by)[0]

    def faces_and_unsure(
        self, image_bgr: Image, reduced_by: int = 1
    ) -> tuple[list[FaceBox], list[FaceBox]]:
        """``faces`` (from ``min_score`` up) and the boxes scored from ``hide_min_score``
        up to ``min_score``, each merged across regions among themselves; of the latter
        only those no longer than ``hide_max_side`` of the frame's width (the faces
        scored that low are small; the larger ones are truck fronts and containers)."""
        found = self._detect(image_bgr, reduced_by)
        min_score = self.settings.min_score
        sure = [f for f in found if f.score >= min_score]
        longest = self.settings.hide_max_side * image_bgr.shape[1] * reduced_by
        unsure = [
            f
            for f in self._merged([f for f in found if f.score < min_score])
            if max(f.width, f.height) <= longest
        ]
        return self._merged(sure), unsure

    def _merged(self, found: list[FaceBox]) -> list[FaceBox]:
        if not found:
            return []
        corners = np.array([[f.x, f.y, f.x + f.width, f.y + f.height] for f in found], np.float32)
        scores = np.array([f.score for f in found], np.float32)
        return [
            FaceBox(float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1]), score)
            for b, score in union_merge(corners, scores, self.settings.nms_iou)
        ]

    def run(self, image_bgr: Image, *, reduced_by: int = 1) -> TaskResult:
        """Faces in ``image_bgr``, or in a frame ``reduced_by`` times bigger that it is the
        reduced decode of (boxes in that frame's pixels)."""
        started = time.perf_counter()
        require_bgr_frame(image_bgr)
        if self.unchanged is None:
            detections = self._detections(image_bgr, reduced_by)
        else:  # a site's opt-in: the same scene as the last frame looked at gets its faces
            thumb, remembered = self.unchanged.lookup(image_bgr)
            if remembered is None:
                detections = self._detections(image_bgr, reduced_by)
                self.unchanged.remember(thumb, detections)
            else:
                detections = list(remembered)
        elapsed = (time.perf_counter() - started) * 1000.0
        return TaskResult(self.name, self.model_name, self.model_version, detections, elapsed)

    def _detections(self, image_bgr: Image, reduced_by: int) -> list[Detection]:
        """The faces, then the boxes scored just under ``min_score`` (``UNSURE_FACE``:
        hidden like faces in what leaves the site, not counted as faces)."""
        faces, unsure = self.faces_and_unsure(image_bgr, reduced_by)
        return [
            *(Detection(FACE, "", face.score, None, face.as_int()) for face in faces),
            *(Detection(UNSURE_FACE, "", box.score, None, box.as_int()) for box in unsure),
        ]

    def blur(self, image_bgr: Image, result: TaskResult) -> Image:
        """``blur_faces`` with this task's margin and method, on the faces of ``result``."""
        return blur_faces(
            image_bgr,
            [d.box for d in result.detections if d.kind in HIDDEN_KINDS],
            margin=self.settings.blur_margin,
            method=self.settings.blur_method,
        )


def load_face_anonymize(settings: FaceAnonymizeSettings, path: Path) -> FaceAnonymizeTask:
    """Load and warm up the face model, ``settings.parallel_invokes`` interpreters of it;
    ``ModelLoadError`` if it is not the expected shape."""
    models = [load_model(settings.runtime, path) for _ in range(settings.parallel_invokes)]
    model = models[0]
    shape = model.inputs[0].shape if model.inputs else ()
    if shape != (1, INPUT_SIZE, INPUT_SIZE, 3) or len(model.output_names) != 2:
        raise ModelLoadError(
            f"{path} is not a 128x128 BlazeFace model (input {shape}, outputs {model.output_names})"
        )
    if not any("regressor" in n for n in model.output_names):
        raise ModelLoadError(f"{path}: no 'regressors' output in {model.output_names}")
    return FaceAnonymizeTask(models, settings)
