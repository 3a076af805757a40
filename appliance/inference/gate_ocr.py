"""The ``gate_ocr`` task: read container codes and number plates at a yard gate.

Pipeline per frame: PP-OCRv4 detection (DB) at ``det_max_side`` -> crop each
text box upright -> PP-OCRv4 recognition in batches -> greedy CTC decode
(restricted to ``rec_charset``) -> group boxes into lines -> when a line ends
in a container-code prefix without its check digit, read the boxed digit to
its right (``check_digit``, digits-only decode) -> ``classify_line`` (ISO
6346 container codes, plates, other text).  Both models are loaded through
the runtime plugins (ONNX Runtime by default).
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.errors import ModelLoadError
from appliance.inference import iso6346
from appliance.inference.check_digit import check_digit_crops
from appliance.inference.device import INT8_SIMD, device_class
from appliance.inference.frame_change import UnchangedFrames
from appliance.inference.frame_check import require_bgr_frame
from appliance.inference.model_files import MODEL_FILES
from appliance.inference.model_fold import (
    DET_INT8_FOLD,
    REC_FOLD,
    REC_SOURCE,
    Fold,
    folded_path,
    recorded_folded_sha256,
)
from appliance.inference.quantize import (
    DET_FP32_MODEL,
    DET_INT8_MODEL,
    int8_detector_path,
    recorded_int8_sha256,
)
from appliance.inference.results import Detection, TaskResult
from appliance.inference.runtimes import LoadedModel, OnnxModel, load_model
from appliance.inference.settings import GateOcrSettings
from appliance.inference.text_detection import (
    DetectionParams,
    TextBox,
    crop_text,
    detect_boxes,
    detection_input,
    detection_size,
)
from appliance.inference.text_kinds import classify_line
from appliance.inference.text_recognition import (
    REC_HEIGHT,
    REC_MIN_WIDTH,
    CtcDecoder,
    RecognizedText,
    recognition_batch,
)
from appliance.inference.urgent_work import URGENT

__all__ = [
    "DET_MODEL",
    "REC_MODEL",
    "UNREAD_TEXT",
    "GateOcrTask",
    "detector_path",
    "load_gate_ocr",
    "recognizer_path",
]

UNREAD_TEXT = "unread_text"  # a detected text box the recognizer could not read: hidden

DET_MODEL = DET_FP32_MODEL  # the pinned files' names, where their derivations name them
REC_MODEL = REC_SOURCE

Image = np.ndarray[Any, Any]
Tensor = np.ndarray[Any, Any]
_CHECK_DIGIT_SEARCH = 1.6  # reported box of a found check digit, in text heights
_CHECK_DIGIT_WIDTH = 96  # a lone digit needs no 320-px canvas; narrower is ~3x cheaper


def _model_version(det_path: Path, rec_path: Path | None = None) -> str:
    det = next(m for m in MODEL_FILES if m.name == DET_MODEL)
    rec = next(m for m in MODEL_FILES if m.name == REC_MODEL)
    det_tag = f"det.{det.sha256[:8]}"
    # a derived file was checked against its record when picked (``detector_path``,
    # ``recognizer_path``): its sha256 is taken from there, not hashed again
    if det_path.name == DET_INT8_MODEL:
        sha256 = recorded_int8_sha256(det_path.parent)
        if sha256 is None:  # an INT8 file given directly, without its record
            sha256 = hashlib.sha256(det_path.read_bytes()).hexdigest()
        det_tag = f"det.{sha256[:8]}-int8"
    elif det_path.name == DET_INT8_FOLD.folded:
        det_tag = f"det.{_folded_sha256(DET_INT8_FOLD, det_path)[:8]}-int8-folded"
    rec_tag = f"rec.{rec.sha256[:8]}"
    if rec_path is not None and rec_path.name == REC_FOLD.folded:
        rec_tag = f"rec.{_folded_sha256(REC_FOLD, rec_path)[:8]}-folded"
    return f"{det.requirement.split('==')[1]}+{det_tag}.{rec_tag}"


def _folded_sha256(fold: Fold, path: Path) -> str:
    sha256 = recorded_folded_sha256(fold, path.parent)
    return hashlib.sha256(path.read_bytes()).hexdigest() if sha256 is None else sha256


@dataclass(frozen=True, slots=True)
class _ReadBox:
    box: TextBox
    text: RecognizedText


def _group_lines(read: list[_ReadBox]) -> list[list[_ReadBox]]:
    """Group boxes that overlap vertically by at least half the smaller one's height into
    lines, top to bottom; each line left to right."""
    lines: list[list[_ReadBox]] = []
    for item in sorted(read, key=lambda r: float(r.box.points[:, 1].mean())):
        _, y, _, h = item.box.bounds
        for line in lines:
            _, ly, _, lh = _union_box(line)
            overlap = min(y + h, ly + lh) - max(y, ly)
            if overlap >= 0.5 * min(h, lh):
                line.append(item)
                break
        else:
            lines.append([item])
    return [sorted(line, key=lambda r: float(r.box.points[:, 0].min())) for line in lines]


def _join_stacked(lines: list[list[_ReadBox]]) -> list[list[_ReadBox]]:
    """Join a line that is only an owner code (``MSCU``) with the line just below it
    when they overlap horizontally: the door layout of a container code."""
    joined: list[list[_ReadBox]] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if index + 1 < len(lines) and iso6346.normalize_owner("".join(r.text.text for r in line)):
            below = lines[index + 1]
            x, y, w, h = _union_box(line)
            bx, by, bw, _ = _union_box(below)
            if y + h - h / 2 <= by <= y + h + 1.5 * h and bx < x + w and x < bx + bw:
                joined.append(line + below)
                index += 2
                continue
        joined.append(line)
        index += 1
    return joined


def _union_box(items: list[_ReadBox]) -> tuple[int, int, int, int]:
    points = np.concatenate([i.box.points for i in items])
    x0, y0 = np.floor(points.min(axis=0)).astype(int)
    x1, y1 = np.ceil(points.max(axis=0)).astype(int)
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


class GateOcrTask:
    """Container codes and plates from a BGR frame; see the module docstring."""

    name = "gate_ocr"
    model_name = "pp-ocrv4"

    def __init__(
        self, det: LoadedModel, rec: LoadedModel, decoder: CtcDecoder, settings: GateOcrSettings
    ) -> None:
        self.det = det
        self.rec = rec
        self.decoder = decoder
        self.settings = settings
        self.model_version = _model_version(det.path, rec.path)
        self._params = DetectionParams(
            thresh=settings.det_thresh,
            box_thresh=settings.det_box_thresh,
            unclip_ratio=settings.det_unclip_ratio,
        )
        self._charset = (
            decoder.allowed_classes(settings.rec_charset) if settings.rec_charset else None
        )
        self._digits = decoder.allowed_classes("0123456789")
        self._urgent_wait_s = settings.wait_for_urgent_ms / 1000.0
        self._recorder: list[tuple[LoadedModel, dict[str, Tensor]]] | None = None
        max_change = settings.skip_unchanged_max_change
        self.unchanged: UnchangedFrames[list[Detection]] | None = (
            None if max_change is None else UnchangedFrames(max_change)
        )
        self._pool = (
            ThreadPoolExecutor(settings.parallel_calls - 1, thread_name_prefix="gate-ocr-call")
            if settings.parallel_calls > 1
            else None
        )

    def detect(self, image_bgr: Image) -> list[TextBox]:
        """Text boxes in frame pixels (largest ``max_text_boxes`` kept), found inside the
        ``det_regions`` when some are set."""
        height, width = image_bgr.shape[:2]
        # each region at the scale the whole frame has, per axis: the same pixels per text
        frame_h, frame_w = detection_size(height, width, self.settings.det_max_side)
        scale_y, scale_x = frame_h / height, frame_w / width
        regions = self.regions_pixels(height, width)
        tensors = [
            detection_input(
                image_bgr[y : y + h, x : x + w],
                self.settings.det_max_side,
                (max(32, round(h * scale_y / 32) * 32), max(32, round(w * scale_x / 32) * 32)),
            )
            for x, y, w, h in regions
        ]
        boxes: list[TextBox] = []
        for (x, y, w, h), probability in zip(
            regions, self._side_by_side(self.det, tensors), strict=True
        ):
            found = detect_boxes(probability[0, 0], (h, w), self._params)
            if x or y:
                offset = np.array([x, y], dtype=np.float32)
                found = [TextBox(b.points + offset, b.score) for b in found]
            boxes += found
        if len(boxes) > self.settings.max_text_boxes:
            by_area = sorted(boxes, key=lambda b: -b.bounds[2] * b.bounds[3])
            keep = {id(b) for b in by_area[: self.settings.max_text_boxes]}
            boxes = [b for b in boxes if id(b) in keep]
        return boxes

    def regions_pixels(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """``det_regions`` as (x, y, w, h) in pixels of a ``height`` x ``width`` frame (the
        whole frame if none is set)."""
        if not self.settings.det_regions:
            return [(0, 0, width, height)]
        regions = []
        for fx, fy, fw, fh in self.settings.det_regions:
            x0, y0 = int(fx * width), int(fy * height)
            x1 = min(width, round((fx + fw) * width))
            y1 = min(height, round((fy + fh) * height))
            regions.append((x0, y0, max(1, x1 - x0), max(1, y1 - y0)))
        return regions

    def _rec_batches(self, crops: list[Image], min_width: int) -> list[tuple[list[int], Tensor]]:
        """Crop indices and input tensor per rec call, batched by aspect ratio (less padding):
        at most ``rec_batch_size`` crops a call, and with ``rec_width_spread`` none more than
        that many times wider than the call's narrowest."""
        ratios = [crop.shape[1] / max(crop.shape[0], 1) for crop in crops]
        order = sorted(range(len(crops)), key=lambda i: ratios[i])
        size, spread = self.settings.rec_batch_size, self.settings.rec_width_spread
        chunks: list[list[int]] = []
        for index in order:
            chunk = chunks[-1] if chunks else None
            if (
                chunk is None
                or len(chunk) >= size
                or (spread and ratios[index] > spread * max(ratios[chunk[0]], 1.0))
            ):
                chunks.append([index])
            else:
                chunk.append(index)
        return [
            (chunk, recognition_batch([crops[i] for i in chunk], min_width)) for chunk in chunks
        ]

    def recognize(
        self,
        crops: list[Image],
        allowed: np.ndarray[Any, Any] | None = None,
        min_width: int | None = None,
    ) -> list[RecognizedText]:
        """Decoded text per crop; ``allowed`` overrides the configured character set."""
        texts: list[RecognizedText | None] = [None] * len(crops)
        width = self.settings.rec_min_width if min_width is None else min_width
        calls = self._rec_batches(crops, width)
        if self._pool is not None and len(calls) == 1 and len(calls[0][0]) > 1:
            # one batch split in two halves of the same tensor (same width, same rows),
            # read on two threads at once
            (chunk, batch), half = calls[0], (len(calls[0][0]) + 1) // 2
            calls = [(chunk[:half], batch[:half]), (chunk[half:], batch[half:])]
        outputs = self._side_by_side(self.rec, [batch for _, batch in calls])
        for (chunk, _), probabilities in zip(calls, outputs, strict=True):
            decoded = self.decoder.decode(
                probabilities, self._charset if allowed is None else allowed
            )
            for index, text in zip(chunk, decoded, strict=True):
                texts[index] = text
        return [t for t in texts if t is not None]

    def _side_by_side(self, model: LoadedModel, tensors: list[Tensor]) -> list[Tensor]:
        """``model``'s first output for each input tensor: the first on this thread, the
        others on the task's call threads at the same time (ONNX Runtime releases the GIL
        and one session runs calls concurrently)."""
        name = model.inputs[0].name
        if self._pool is None or len(tensors) < 2:
            return [self._call(model, {name: tensor})[0] for tensor in tensors]
        others: list[Future[list[Tensor]]] = []
        for tensor in tensors[1:]:
            try:
                others.append(self._pool.submit(self._call, model, {name: tensor}))
            except RuntimeError:  # closed under a frame (the updates switch waits for
                break  # the old task's frames, so only a close from elsewhere gets here)
        first = self._call(model, {name: tensors[0]})[0]
        inline = [self._call(model, {name: t})[0] for t in tensors[1 + len(others) :]]
        return [first, *(future.result()[0] for future in others), *inline]

    def _call(self, model: LoadedModel, feeds: dict[str, Tensor]) -> list[Tensor]:
        if self._recorder is not None:
            self._recorder.append((model, feeds))
        URGENT.let_pass(self._urgent_wait_s)  # the face task's calls first (bounded)
        return list(model.run(feeds).values())

    def close(self) -> None:
        """Stop the call threads.  The updates switch closes a task once its frames are
        done (``FrameProcessor.runs_ended``); a ``run`` after this still reads the
        frame, its calls on its own thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def model_calls(self, image_bgr: Image) -> list[tuple[LoadedModel, dict[str, Tensor]]]:
        """Every model call ``run`` makes for this frame, with its exact input tensors.

        For benchmarks that time the bare models on the same inputs.  Not thread-safe:
        do not call it while another thread runs this task.
        """
        self._recorder = []
        try:
            self._read(image_bgr)
            return self._recorder
        finally:
            self._recorder = None

    def run(self, image_bgr: Image) -> TaskResult:
        started = time.perf_counter()
        require_bgr_frame(image_bgr)
        if self.unchanged is None:
            detections = self._read(image_bgr)
        else:
            thumb, remembered = self.unchanged.lookup(image_bgr)
            if remembered is None:
                detections = self._read(image_bgr)
                self.unchanged.remember(thumb, detections)
            else:
                detections = list(remembered)
        elapsed = (time.perf_counter() - started) * 1000.0
        return TaskResult(self.name, self.model_name, self.model_version, detections, elapsed)

    def _read(self, image_bgr: Image) -> list[Detection]:
        """Every model call and step for one frame: the detections."""
        URGENT.let_pass(self._urgent_wait_s)  # a frame's face read first (bounded)
        boxes = self.detect(image_bgr)
        texts = self.recognize([crop_text(image_bgr, box) for box in boxes]) if boxes else []
        read = [
            _ReadBox(box, text)
            for box, text in zip(boxes, texts, strict=True)
            if text.text.strip() and text.confidence >= self.settings.min_text_confidence
        ]
        detections: list[Detection] = []
        for line in _join_stacked(_group_lines(read)):
            line = self._complete_check_digit(image_bgr, line)
            for found in classify_line([r.text.text for r in line]):
                pieces = line[found.start : found.end]
                confidence = min(p.text.confidence for p in pieces)
                detections.append(
                    Detection(found.kind, found.value, confidence, found.valid, _union_box(pieces))
                )
        # mask on detection, not on recognition: text the recognizer cannot read is hidden
        readable = {id(r.box) for r in read}
        detections += [
            Detection(UNREAD_TEXT, "", box.score, None, box.bounds)
            for box in boxes
            if id(box) not in readable
        ]
        return detections

    def _complete_check_digit(self, image_bgr: Image, line: list[_ReadBox]) -> list[_ReadBox]:
        """Append the boxed check digit to a line whose last pieces read as a code prefix."""
        for count in (1, 2, 3):
            if count > len(line):
                break
            pieces = line[len(line) - count :]
            if iso6346.normalize_prefix("".join(p.text.text for p in pieces)) is None:
                continue
            x, y, w, h = _union_box(pieces[-1:])  # the serial: the digit is boxed to its right
            digit = self._read_check_digit(image_bgr, (x, y, w, h))
            if digit is None:
                return line
            span = int(_CHECK_DIGIT_SEARCH * h)
            corners = np.array(
                [
                    [x + w, y],
                    [x + w + span, y],
                    [x + w + span, y + h],
                    [x + w, y + h],
                ],
                dtype=np.float32,
            )
            return [*line, _ReadBox(TextBox(corners, digit.confidence), digit)]
        return line

    def _read_check_digit(
        self, image_bgr: Image, serial_box: tuple[int, int, int, int]
    ) -> RecognizedText | None:
        """The most confident single digit among the candidates right of the serial."""
        interior, windows = check_digit_crops(image_bgr, serial_box)
        rounds = [[interior] if interior is not None else [], windows]
        if not self.settings.check_digit_interior_first:
            rounds = [rounds[0] + rounds[1]]
        for candidates in rounds:
            if not candidates:
                continue
            readings = [
                r
                for r in self.recognize(candidates, self._digits, _CHECK_DIGIT_WIDTH)
                if len(r.text) == 1
            ]
            digit = max(readings, key=lambda r: r.confidence, default=None)
            if digit is not None and digit.confidence >= self.settings.check_digit_min_confidence:
                return digit
        return None


def detector_path(settings: GateOcrSettings, det_path: Path) -> Path:
    """The detector file ``settings.det_model`` asks for: the INT8 file beside ``det_path``
    (``auto``: only on a CPU with int8 dot products, and only if it is there), else FP32;
    an INT8 file's folded sibling when ``folded_models`` and its record matches."""
    if settings.det_model == "fp32" or (
        settings.det_model == "auto" and device_class()["simd"] not in INT8_SIMD
    ):
        return det_path  # no file hashed: the INT8 files are not looked at
    # the folded file's record vouches only when the INT8 file's does: checked first, the
    # INT8 file alone is checked only without it
    folded = folded_path(DET_INT8_FOLD, det_path.parent) if settings.folded_models else None
    picked = folded or int8_detector_path(det_path.parent)
    if picked is None and settings.det_model == "int8":
        raise ModelLoadError(
            f"det_model = 'int8' but {det_path.parent / DET_INT8_MODEL} is missing or does "
            "not match its record (run 'yardlink models quantize' or 'make models')"
        )
    return picked or det_path


def recognizer_path(settings: GateOcrSettings, rec_path: Path) -> Path:
    """``rec_path``, or its folded sibling when ``folded_models`` and its record matches."""
    folded = folded_path(REC_FOLD, rec_path.parent) if settings.folded_models else None
    return folded or rec_path


def load_gate_ocr(settings: GateOcrSettings, det_path: Path, rec_path: Path) -> GateOcrTask:
    """Load and warm up both models; ``ModelLoadError`` if either cannot be used.  The
    detector is ``det_path`` or its INT8 sibling, as ``detector_path`` picks; the
    recognizer ``rec_path`` or its folded sibling, as ``recognizer_path`` picks."""
    det = load_model(settings.runtime, detector_path(settings, det_path), {"x": (1, 3, 64, 64)})
    rec = load_model(
        settings.runtime,
        recognizer_path(settings, rec_path),
        {"x": (1, 3, REC_HEIGHT, REC_MIN_WIDTH)},
    )
    if not isinstance(rec, OnnxModel):
        raise ModelLoadError(f"gate_ocr needs an ONNX runtime, got {rec.runtime!r}")
    metadata = rec.session.get_modelmeta().custom_metadata_map
    try:
        decoder = CtcDecoder.from_metadata(metadata)
    except KeyError:
        raise ModelLoadError(
            f"{rec_path} has no 'character' dictionary in its ONNX metadata"
        ) from None
    classes = rec.session.get_outputs()[0].shape[-1]
    if isinstance(classes, int) and classes != len(decoder.classes):
        raise ModelLoadError(
            f"{rec_path}: {classes} output classes but {len(decoder.classes)} in its dictionary"
        )
    return GateOcrTask(det, rec, decoder, settings)
