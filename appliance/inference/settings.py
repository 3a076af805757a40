"""The ``[inference]`` section of the site configuration.

One sub-section per task; each names its runtime (``kind = "onnxruntime"`` or
``"litert"``) with that runtime's own options, its latency SLA and its
thresholds.  Example TOML::

    [inference.gate_ocr]
    enabled = true
    sla_p99_ms = 300
    det_max_side = 640
    [inference.gate_ocr.runtime]
    kind = "onnxruntime"
    intra_op_threads = 1

    [inference.face_anonymize]
    sla_p99_ms = 80
    scan_face_fractions = [0.05, 0.1]
    [inference.face_anonymize.runtime]
    kind = "litert"
    num_threads = 1

SLA defaults, and what they were set against (2 shared x86 cores, 1280x720
synthetic gate frames, ``python -m bench.inference``):

* ``gate_ocr`` 300 ms: the task itself ran in ~60-90 ms p50 on a quiet day and
  ~220-280 ms p50 on the slow runs of 2026-11-27 (docs/BENCHMARKS.md; detection
  at 640 px on the long side, recognition of every text line, one extra
  digits-only pass for a boxed check digit); a slow machine can breach it,
  and the daemon counts every breach.
* ``face_anonymize`` 80 ms: ~40-55 ms per frame with the default tiles (the
  whole frame plus 18 overlapping tiles, ~2 ms of model call each, measured
  2026-11-27) on one model thread, ~25-30 ms with ``parallel_invokes = 2``
  (two interpreters, one per core); 80 ms leaves room for sharing the two
  cores with gate OCR.
  With ``tile_fractions = []`` it is one model call, but faces under ~150 px are missed.
  Frame receipt to durable record adds the JPEG decode (~5 ms for 1280x720 at
  1/2 scale when the face task runs alone, ~6.3 ms at full size with gate OCR)
  and ~3 ms of hand-offs and the outbox fsync (docs/INFERENCE.md).

The daemon measures the SLA from frame receipt to the result durable in the
outbox, so it includes queueing and the outbox write.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from appliance.inference.runtimes import LiteRtConfig, OnnxRuntimeConfig, RuntimeConfig

__all__ = ["FaceAnonymizeSettings", "GateOcrSettings", "InferenceSettings"]

AnyRuntime = Annotated[RuntimeConfig, Field(discriminator="kind")]


class GateOcrSettings(BaseModel):
    """Gate OCR: PP-OCRv4 text detection + recognition, container codes and plates."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    runtime: AnyRuntime = Field(
        default_factory=lambda: OnnxRuntimeConfig(intra_op_threads=1),
        description="one thread inside an op: the face task runs on the other core at the "
        "same time, and ORT's second thread spins, burning CPU time the face task needs "
        "(docs/INFERENCE.md)",
    )
    sla_p99_ms: float = Field(
        default=300.0, gt=0, description="p99 frame receipt -> result in outbox, milliseconds"
    )
    det_max_side: int = Field(
        default=640,
        ge=160,
        le=2048,
        description="longest side the detector sees (rounded to a multiple of 32); "
        "smaller is faster but loses small text.  On 24 varied 1280x720 synthetic frames "
        "(2 shared cores): 480 px read 79% of codes at ~65 ms p50, 640 px 79-95% at "
        "~75 ms, 736 px 96% at ~110 ms, 960 px 88% at ~160 ms",
    )
    det_thresh: float = Field(default=0.3, gt=0, lt=1, description="DB probability-map threshold")
    det_box_thresh: float = Field(
        default=0.5, gt=0, lt=1, description="minimum mean score of a box"
    )
    det_unclip_ratio: float = Field(
        default=1.6, gt=0, description="how far a box is grown around text"
    )
    rec_batch_size: int = Field(
        default=8, ge=1, le=64, description="text crops per recognition call"
    )
    min_text_confidence: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="recognised text below this mean probability is dropped",
    )
    rec_charset: str | None = Field(
        default="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -./",
        description="characters recognition may output (others are never chosen); "
        "None allows the model's whole dictionary (6,600 mostly CJK characters)",
    )
    check_digit_min_confidence: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="a boxed check digit read on its own (digits only) is kept above this; "
        "the code's confidence is the lowest of its parts, so a weak digit shows there",
    )
    max_text_boxes: int = Field(
        default=48, ge=1, description="most text boxes recognised per frame (largest first)"
    )
    det_regions: list[tuple[float, float, float, float]] = Field(
        default_factory=list,
        description="the parts of the frame where codes and plates can appear at this site "
        "(each x, y, width, height as fractions of the frame; e.g. the container side's band "
        "and the plate's band of a lane): the detector runs on each, at the scale the whole "
        "frame would have (det_max_side over its longest side), so a region costs its share "
        "of the frame's pixels; boxes are reported in frame pixels.  [] = the whole frame",
    )
    det_model: Literal["auto", "fp32", "int8"] = Field(
        default="auto",
        description="the detector's precision: int8 is the Conv-quantized file made by "
        "'yardlink models quantize' (make models); auto takes it on CPUs with VNNI, where it "
        "was measured to keep accuracy and cut the detector's CPU time, and FP32 elsewhere or "
        "when the INT8 file is absent (docs/INFERENCE.md)",
    )
    folded_models: bool = Field(
        default=True,
        description="load the folded sibling of the recognizer and of the INT8 detector "
        "('yardlink models quantize', make models: their scalar affine steps and hardswish "
        "chains folded into the convolutions, the same function up to float rounding for less "
        "CPU a call) when it is there and its record matches; False = the files as fetched "
        "and quantized (docs/INFERENCE.md)",
    )
    rec_min_width: int = Field(
        default=320,
        ge=8,
        le=2048,
        description="recognition input width at least this (crops are right-padded); "
        "PaddleOCR's 320 pads a 5-character plate to 320 columns, and the model's cost grows "
        "with the width.  Smaller pads each batch only to its widest crop",
    )
    rec_width_spread: float = Field(
        default=0.0,
        ge=0.0,
        description="start a new recognition call when a crop (by aspect ratio) would be more "
        "than this many times wider than the first of the call; 0 = fill calls up to "
        "rec_batch_size whatever their widths",
    )
    check_digit_interior_first: bool = Field(
        default=True,
        description="read the inside of the check digit's box alone first and slide windows "
        "along the line only when that gives no confident digit (one small call instead of "
        "about seven crops); False reads every candidate in one call",
    )
    parallel_calls: int = Field(
        default=2,
        ge=1,
        le=4,
        description="model calls of one frame run side by side on this many threads (the "
        "detector's regions; a recognition batch split in two halves): a new scene's read "
        "takes less wall time on a 2-core gateway when the other core is free; the inputs "
        "and so the reads do not change.  1 = one call after another",
    )
    wait_for_urgent_ms: float = Field(
        default=25.0,
        ge=0,
        le=10_000,
        description="before each model call, wait up to this long while an urgent task's "
        "model calls run (the face task's, whose record a frame's release waits on): on a "
        "2-core gateway the short face read then ends first instead of both reads running at "
        "half speed, and this read ends about when it would have.  0 = never wait "
        "(docs/INFERENCE.md)",
    )
    skip_unchanged_max_change: float | None = Field(
        default=None,
        ge=0,
        description="answer a frame that differs from the last frame read by no more than "
        "this many grey levels in any 32x32-pixel cell mean with that frame's result, "
        "without running the models (a gate camera repeats the same scene between trucks); "
        "None = read every frame.  Opt-in: a change that keeps cell means (a pixelated "
        "plate, a look-alike truck) would be answered with the previous read",
    )

    @field_validator("det_regions")
    @classmethod
    def _regions_inside_frame(
        cls, regions: list[tuple[float, float, float, float]]
    ) -> list[tuple[float, float, float, float]]:
        for x, y, w, h in regions:
            if not (0 <= x < 1 and 0 <= y < 1 and w > 0 and h > 0):
                raise ValueError("a det_regions box needs 0 <= x, y < 1 and width, height > 0")
            if x + w > 1.0 + 1e-9 or y + h > 1.0 + 1e-9:
                raise ValueError(
                    "a det_regions box must lie inside the frame (x + width, y + height <= 1)"
                )
        for i, (x, y, w, h) in enumerate(regions):
            for ox, oy, ow, oh in regions[i + 1 :]:
                if min(x + w, ox + ow) > max(x, ox) and min(y + h, oy + oh) > max(y, oy):
                    raise ValueError("det_regions must not overlap (text would be read twice)")
        return regions


class FaceAnonymizeSettings(BaseModel):
    """Face anonymisation: MediaPipe BlazeFace short-range on LiteRT, then blur."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    runtime: AnyRuntime = Field(default_factory=lambda: LiteRtConfig())
    sla_p99_ms: float = Field(
        default=80.0, gt=0, description="p99 frame receipt -> result in outbox, milliseconds"
    )
    min_score: float = Field(
        default=0.4,
        gt=0,
        lt=1,
        description="minimum face score (after sigmoid); below MediaPipe's 0.5 so that the "
        "grey, small faces it scores 0.44-0.5 are hidden too (docs/INFERENCE.md)",
    )
    hide_min_score: float = Field(
        default=0.3,
        gt=0,
        lt=1,
        description="boxes scored from this up to min_score are reported as face_unsure and "
        "hidden like faces in what leaves the site: grey or small faces the model scores just "
        "under min_score (0.39-0.40 seen) stay hidden (docs/INFERENCE.md).  At or above "
        "min_score: faces only",
    )
    hide_max_side: float = Field(
        default=0.15,
        gt=0,
        le=1,
        description="of those boxes, only the ones whose longer side is at most this "
        "fraction of the frame's width are hidden (192 px of 1280: a gate's faces; the faces "
        "scored that low are small, the larger boxes lie on truck fronts and containers)",
    )
    nms_iou: float = Field(default=0.3, gt=0, lt=1, description="IoU above which boxes are merged")
    blur_margin: float = Field(
        default=0.25, ge=0, le=1, description="box grown by this fraction of its size on each side"
    )
    blur_method: Literal["pixelate", "gaussian", "fill"] = "pixelate"
    scan_face_fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: [0.05, 0.1],
        description="besides the whole frame (faces over ~1/4 of its width), scan the frame "
        "at the scale where a face of each fraction of the frame's width is the smallest the "
        "model finds; each scan finds faces from that size to ~3.5 times it, so the default "
        "covers faces from 64 px in a 1280x720 frame (a gate's drivers and passers-by) up.  "
        "The model runs over the resized frame whole (it is fully convolutional), in two "
        "windows side by side when large.  [] = whole frame (and tiles) only",
    )
    scan_region: tuple[float, float, float, float] | None = Field(
        default=None,
        description="a site's opt-in: the part of the frame where faces can appear at its "
        "gate (x, y, width, height as fractions of the frame: the cab windows' and the "
        "footway's band); the scans for small faces cover only it, the whole-frame input "
        "still covers the frame.  A face smaller than ~1/4 of the frame's width outside "
        "it is NOT found, so it stays in clear in what leaves.  None = the whole frame",
    )
    skip_unchanged_max_change: float | None = Field(
        default=None,
        ge=0,
        description="a site's opt-in: answer a frame that differs from the last frame read "
        "by no more than this many grey levels in any 32x32-pixel cell mean with that "
        "frame's faces, without running the model (a gate camera repeats the same scene "
        "between trucks).  A face that appears without moving a cell mean that much (one "
        "close in grey to what it covers) is NOT found, so it stays in clear in what leaves.  "
        "None = look at every frame",
    )
    tile_fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=list,
        description="also run the detector on overlapping square tiles whose side is each "
        "fraction of the frame's short side (each tile letterboxed to 128x128, as the model "
        "was trained); the scans find the same faces for less (docs/INFERENCE.md)",
    )
    tile_overlap: float = Field(
        default=0.33, ge=0, lt=0.9, description="overlap between neighbouring tiles"
    )
    urgent: bool = Field(
        default=True,
        description="the model calls of a frame are urgent work: tasks that share the cores "
        "(gate OCR, wait_for_urgent_ms) hold their next model call while they run, so the "
        "faces, which a frame's release waits on, are known first.  False = no precedence",
    )
    parallel_invokes: int = Field(
        default=2,
        ge=1,
        le=4,
        description="interpreters of the model (each loaded from the same file, each on its "
        "own long-lived thread) that run a frame's regions side by side; LiteRT's invoke "
        "releases the GIL, so 2 uses both cores of a 2-core gateway.  The regions, inputs "
        "and the order their outputs are merged in do not change, so neither do the faces.  "
        "1 = one model thread, regions one after another",
    )

    @field_validator("scan_region")
    @classmethod
    def _scan_region_inside_frame(
        cls, region: tuple[float, float, float, float] | None
    ) -> tuple[float, float, float, float] | None:
        if region is None:
            return None
        x, y, w, h = region
        if not (0 <= x < 1 and 0 <= y < 1 and w > 0 and h > 0):
            raise ValueError("scan_region needs 0 <= x, y < 1 and width, height > 0")
        if x + w > 1.0 + 1e-9 or y + h > 1.0 + 1e-9:
            raise ValueError("scan_region must lie inside the frame (x + width, y + height <= 1)")
        return region


class InferenceSettings(BaseModel):
    """Every inference task the appliance can run, each enabled or not."""

    model_config = ConfigDict(extra="forbid")

    gate_ocr: GateOcrSettings = Field(default_factory=lambda: GateOcrSettings())
    face_anonymize: FaceAnonymizeSettings = Field(default_factory=lambda: FaceAnonymizeSettings())
