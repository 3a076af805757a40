"""Gate OCR against today's pipeline (issue 20): accuracy on the evaluation set, latency at a
gate camera's pace with both tasks, sustained frames/s, the bare model calls as anchor.

Part of ``python -m bench.inference`` (same run, same rows file); the pieces:

* **accuracy** -- the labelled evaluation set (``yardlink models eval-set``, seed
  ``EVAL_SEED``, written to a temporary directory) read by three readers on every
  frame, in rotating order: ``today`` (the gate OCR settings before issue 20,
  spelled out in ``TODAY_GATE_OCR``: the FP32 detector), ``tuned``
  (``GateOcrSettings()``, the defaults now: the INT8 detector on a VNNI CPU) and
  ``rapidocr`` (RapidOCR's own end-to-end ``RapidOCR()`` call from the wheel the
  models come from, its texts grouped into lines and classified the way our task
  classifies its own; every ``RAPIDOCR_EVERY``-th frame only).
  Per reader: container-code accuracy (11 characters and the check-digit verdict),
  plate accuracy (through the site's HMAC token), wall and process CPU time per
  frame (JPEG decode + read).
* **camera pace** -- a gate camera's stream: synthetic scenes (trucks, plates,
  faces), each held for ``HOLD`` frames (the next frames of a scene are the same
  picture with fresh sensor noise, JPEG-encoded again), pushed at ``CAMERA_FPS``
  whether or not the appliance keeps up, into a queue that ``CONSUMERS`` consumers
  drain as the daemon's do (decode -> ``FrameProcessor.process`` with both tasks -> durable
  RocksDB record).  Frame-to-durable per task is from the frame's arrival (its
  slot in the stream) to the moment its record is durable, so queueing counts.
  ``today`` and ``tuned`` alternate in slices of ``SLICE`` frames (same frames),
  so load from other processes hits both alike; process CPU per frame is measured
  over each slice.  A second stream where every frame is a new scene (``HOLD`` 1)
  is the worst case.
* **anchor** -- the bare ONNX Runtime calls each gate OCR pipeline makes for a
  new scene (``task.model_calls``, ``session.run`` only), timed in the same
  rotation as the readers.
* **sustained** -- frames/s with both tasks, frames back to back (every frame a
  new scene), ``CONSUMERS`` consumers, ``today`` and ``tuned`` in alternating slices.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.intake import CONSUMERS
from bench._common import Row, row

Image = np.ndarray[Any, Any]

# the gate OCR settings before issue 20 (the defaults then), so "today" stays today
TODAY_GATE_OCR: dict[str, Any] = {
    "runtime": {"kind": "onnxruntime", "intra_op_threads": 2, "inter_op_threads": 1},
    "det_max_side": 640,
    "det_model": "fp32",
    "det_regions": [],
    "rec_min_width": 320,
    "rec_width_spread": 0.0,
    "check_digit_interior_first": False,
    "skip_unchanged_max_change": None,
    "folded_models": False,
    "wait_for_urgent_ms": 0.0,  # today's read ran beside the face task's
}
CAMERA_FPS = 10.0  # twice today's ~5 frames/s
HOLD = 5  # frames a scene is held (a truck at the barrier for half a second at 10 fps)
SLICE = 20  # frames per A/B slice
_CAMERA = "gate-in"
_MAX_FRAME_BYTES = 8 << 20
_STREAM_SEED = 31  # not the evaluation seed
RAPIDOCR_EVERY = 5  # RapidOCR (~3x the CPU of ours per frame) reads every 5th eval frame
SKIP_MAX_CHANGE = 4.0  # "tuned_skip": the defaults and a site's opt-in to skip unchanged frames


def _percentile(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q)) if samples else float("nan")


def _decode(jpeg: bytes) -> Image:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def _jpeg(image: Image) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return bytes(data.tobytes())


def camera_stream(scenes: int, hold: int, seed: int = _STREAM_SEED) -> list[bytes]:
    """``scenes`` synthetic gate scenes, each sent ``hold`` times (fresh noise each time)."""
    from appliance.sources.synthetic import SyntheticYardCamera

    rng = np.random.default_rng(seed)
    stream = []
    for frame in SyntheticYardCamera(seed=seed).frames(scenes):
        stream.append(_jpeg(frame.image_bgr))
        for _ in range(hold - 1):
            noise = rng.normal(0.0, 2.0, frame.image_bgr.shape)
            stream.append(_jpeg(np.clip(frame.image_bgr + noise, 0, 255).astype(np.uint8)))
    return stream


def face_tasks(models: Path, shipped: Any) -> dict[str, Any]:
    """The face task beside each of ``gate_ocr_tasks``: the shipped one, and for
    ``tuned_skip`` the same settings with the site's opt-in to skip unchanged frames."""
    from appliance.inference.face_anonymize import FACE_MODEL, load_face_anonymize
    from appliance.inference.model_files import model_path

    settings = shipped.settings.model_copy(update={"skip_unchanged_max_change": SKIP_MAX_CHANGE})
    skipping = load_face_anonymize(settings, model_path(FACE_MODEL, models))
    return {"today": shipped, "tuned": shipped, "tuned_skip": skipping}


def gate_ocr_tasks(models: Path) -> dict[str, Any]:
    """``today`` and ``tuned`` gate OCR tasks on the same model files."""
    from appliance.inference.gate_ocr import DET_MODEL, REC_MODEL, load_gate_ocr
    from appliance.inference.settings import GateOcrSettings

    settings = {
        "today": GateOcrSettings(**TODAY_GATE_OCR),
        "tuned": GateOcrSettings(),
        "tuned_skip": GateOcrSettings(skip_unchanged_max_change=SKIP_MAX_CHANGE),
    }
    return {
        name: load_gate_ocr(s, models / DET_MODEL, models / REC_MODEL)
        for name, s in settings.items()
    }


# --------------------------------------------------------------------------- accuracy


def _rapidocr_result(engine: Any, image: Image) -> Any:
    """RapidOCR's end-to-end read, as a ``TaskResult`` our scoring understands: its boxes
    grouped into lines and classified by ``gate_ocr``'s own line steps (no check-digit
    re-read: that step is ours)."""
    from appliance.inference import gate_ocr
    from appliance.inference.results import Detection, TaskResult
    from appliance.inference.text_detection import TextBox
    from appliance.inference.text_kinds import classify_line
    from appliance.inference.text_recognition import RecognizedText

    found, _ = engine(image)
    read = [
        gate_ocr._ReadBox(
            TextBox(np.asarray(box, np.float32), float(score)),
            RecognizedText(str(text).upper(), float(score)),
        )
        for box, text, score in (found or [])
    ]
    detections = []
    for line in gate_ocr._join_stacked(gate_ocr._group_lines(read)):
        for item in classify_line([r.text.text for r in line]):
            pieces = line[item.start : item.end]
            confidence = min(p.text.confidence for p in pieces)
            box = gate_ocr._union_box(pieces)
            detections.append(Detection(item.kind, item.value, confidence, item.valid, box))
    return TaskResult("rapidocr", "rapidocr", "1.4.4", detections, 0.0)


@dataclass
class _Reader:
    run: Callable[[Image], Any]
    codes: list[bool] = field(default_factory=list)
    plates: list[bool] = field(default_factory=list)
    false_codes: int = 0
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)


def accuracy_rows(tasks: dict[str, Any], count: int, command: str) -> list[Row]:
    """Today and tuned on the first ``count`` frames of the evaluation set, RapidOCR on every
    ``RAPIDOCR_EVERY``-th of them."""
    from rapidocr_onnxruntime import RapidOCR

    from appliance.inference.eval_set import EVAL_SEED, write_eval_set
    from appliance.inference.ocr_accuracy import score_frame
    from appliance.privacy.tokens import PlateTokenizer

    engine = RapidOCR()
    readers = {
        "today": _Reader(tasks["today"].run),
        "tuned": _Reader(tasks["tuned"].run),
        "rapidocr": _Reader(lambda image: _rapidocr_result(engine, image)),
    }
    tasks = {name: tasks[name] for name in ("today", "tuned")}  # skipping: see paced_rows
    bare = {name: list[float]() for name in tasks}
    tokenizer = PlateTokenizer(b"bench-site-key-for-plate-tokens!")
    names = list(readers)
    with tempfile.TemporaryDirectory(prefix="bench-ocr-eval-") as tmp:
        eval_set = write_eval_set(Path(tmp), count, EVAL_SEED)
        for turn, (frame, jpeg) in enumerate(eval_set.jpegs()):
            calls = {name: task.model_calls(_decode(jpeg)) for name, task in tasks.items()}
            for name in names[turn % 3 :] + names[: turn % 3]:
                if name == "rapidocr" and frame.index % RAPIDOCR_EVERY:
                    continue
                reader = readers[name]
                wall, cpu = time.perf_counter(), time.process_time()
                result = reader.run(_decode(jpeg))
                reader.wall_ms.append((time.perf_counter() - wall) * 1000.0)
                reader.cpu_ms.append((time.process_time() - cpu) * 1000.0)
                code, plate, false_codes = score_frame(frame, result, tokenizer)
                reader.codes.append(code)
                reader.false_codes += false_codes
                if plate is not None:
                    reader.plates.append(plate)
                if name in calls:
                    started = time.perf_counter()
                    for model, feeds in calls[name]:
                        model.session.run(None, feeds)
                    bare[name].append((time.perf_counter() - started) * 1000.0)
    rows = []
    today = readers["today"]
    for name, reader in readers.items():
        code_rate = sum(reader.codes) / len(reader.codes)
        plate_rate = sum(reader.plates) / max(len(reader.plates), 1)
        baseline_code = sum(today.codes) / len(today.codes)
        baseline_plate = sum(today.plates) / max(len(today.plates), 1)
        is_goal = name == "tuned"
        for metric, value, baseline in (
            ("code_accuracy", code_rate, baseline_code),
            ("plate_accuracy", plate_rate, baseline_plate),
        ):
            rows.append(
                row(
                    f"gate_ocr.eval.{name}.{metric}",
                    value,
                    "ratio",
                    goal=(
                        f">= today's FP32 pipeline on {len(reader.codes)} eval frames"
                        if is_goal
                        else f"info: {len(reader.codes)} eval frames (seed {eval_set.seed})"
                    ),
                    command=command,
                    anchor=None if name == "today" else f"gate_ocr.eval.today.{metric}",
                    anchor_value=None if name == "today" else round(baseline, 4),
                    met=(value >= baseline) if is_goal else None,
                )
            )
        rows.append(
            row(
                f"gate_ocr.eval.{name}.false_codes",
                reader.false_codes,
                "codes",
                goal="info: codes reported that the frame does not show",
                command=command,
            )
        )
        for label, samples in (("wall", reader.wall_ms), ("cpu", reader.cpu_ms)):
            for q in (50, 99):
                rows.append(
                    row(
                        f"gate_ocr.eval.{name}.{label}_ms.p{q}",
                        _percentile(samples, q),
                        "ms",
                        goal=f"info: JPEG decode + read, one frame at a time ({label} time"
                        + (", whole process)" if label == "cpu" else ")"),
                        command=command,
                    )
                )
    for name, samples in bare.items():
        for q in (50, 99):
            rows.append(
                row(
                    f"gate_ocr.eval.{name}.bare.p{q}",
                    _percentile(samples, q),
                    "ms",
                    goal="anchor: this pipeline's model calls only (session.run), same frames",
                    command=command,
                )
            )
    return rows


# --------------------------------------------------------------------------- camera pace


@dataclass
class _Pace:
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    cpu_ms: float = 0.0
    wall_s: float = 0.0
    frames: int = 0


async def _push(processor: Any, jpeg: bytes, serial: int) -> None:
    from appliance.sources.frames import decode_frame

    frame = await asyncio.to_thread(
        decode_frame,
        _CAMERA,
        jpeg,
        "image/jpeg",
        max_bytes=_MAX_FRAME_BYTES,
        metadata={"bench_serial": serial},
        reduction=processor.jpeg_reduction,
    )
    await processor.process(frame)


async def _paced_slice(
    processor: Any,
    durable: dict[tuple[int, str], float],
    frames: Sequence[bytes],
    serials: Sequence[int],
    fps: float | None,
    pace: _Pace,
) -> None:
    """Push ``frames`` at ``fps`` (None: as fast as the daemon's consumers take them);
    wait for all."""
    arrivals: dict[int, float] = {}
    queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()

    async def consumer() -> None:
        while (item := await queue.get()) is not None:
            await _push(processor, item[1], item[0])

    cpu, wall = time.process_time(), time.monotonic()
    workers = [asyncio.create_task(consumer()) for _ in range(CONSUMERS)]
    start = time.monotonic()
    for k, (jpeg, serial) in enumerate(zip(frames, serials, strict=True)):
        if fps is not None:
            await asyncio.sleep(max(0.0, start + k / fps - time.monotonic()))
        arrivals[serial] = time.monotonic() if fps is None else max(start + k / fps, 0.0)
        queue.put_nowait((serial, jpeg))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    pace.cpu_ms += (time.process_time() - cpu) * 1000.0
    pace.wall_s += time.monotonic() - wall
    pace.frames += len(frames)
    for serial, arrived in arrivals.items():
        for task in ("gate_ocr", "face_anonymize"):
            pace.latency_ms.setdefault(task, []).append(
                (durable.pop((serial, task)) - arrived) * 1000.0
            )


async def paced_rows(
    open_processor: Callable[[dict[str, Any]], Any],
    durable: dict[tuple[int, str], float],
    tasks: dict[str, Any],
    face_tasks: dict[str, Any],
    scenes: int,
    command: str,
) -> list[Row]:
    """Both tasks, today vs tuned gate OCR: at camera pace (held and all-new scenes) and
    back to back; alternating slices of the same frames.  ``face_tasks``: the face task
    beside each gate OCR task, by the same names (``tuned_skip`` skips unchanged frames in
    both tasks, as a site that opts in to one would to the other)."""
    processors = {
        name: open_processor({"gate_ocr": task, "face_anonymize": face_tasks[name]})
        for name, task in tasks.items()
    }
    every_task = [*tasks.values(), *face_tasks.values()]
    streams = {
        "camera": (camera_stream(scenes, HOLD), CAMERA_FPS),
        "new_scenes": (camera_stream(scenes, 1, seed=_STREAM_SEED + 1), CAMERA_FPS),
        "back_to_back": (camera_stream(scenes, 1, seed=_STREAM_SEED + 2), None),
    }
    serial = itertools.count(1)
    rows: list[Row] = []
    for stream_name, (frames, fps) in streams.items():
        # skipping unchanged frames only matters where scenes are held
        names = [n for n in processors if n != "tuned_skip" or stream_name == "camera"]
        paces = {name: _Pace() for name in names}
        for start in range(0, len(frames), SLICE):
            part = frames[start : start + SLICE]
            order = names if (start // SLICE) % 2 == 0 else names[::-1]
            for name in order:
                for task in every_task:
                    if task.unchanged is not None:
                        task.unchanged.forget()  # each slice starts from a cold reader
                serials = [next(serial) for _ in part]
                await _paced_slice(processors[name], durable, part, serials, fps, paces[name])
        rows += _pace_rows(stream_name, fps, paces, command)
    return rows


def _pace_rows(stream: str, fps: float | None, paces: dict[str, _Pace], command: str) -> list[Row]:
    rows = []
    how = (
        f"frames arriving at {fps:g} fps"
        + (f", scenes held {HOLD} frames" if stream == "camera" else ", every frame a new scene")
        if fps is not None
        else "frames back to back, every one a new scene"
    )
    goals = {
        ("gate_ocr", 50): 60.0,
        ("gate_ocr", 99): 100.0,
        ("face_anonymize", 99): 40.0,
    }
    for name, pace in paces.items():
        if fps is not None:
            for task in ("gate_ocr", "face_anonymize"):
                for q in (50, 99):
                    value = _percentile(pace.latency_ms[task], q)
                    metric = f"frame_to_durable.p{q}"
                    limit = goals.get((task, q))
                    goal_here = name != "today" and limit is not None and stream == "camera"
                    rows.append(
                        row(
                            f"{task}.{stream}.{name}.{metric}",
                            value,
                            "ms",
                            goal=(f"<= {limit:g} ms" if goal_here else "info")
                            + f": both tasks, {how}; from arrival to durable record",
                            command=command,
                            anchor=None
                            if name == "today"
                            else f"{task}.{stream}.today.frame_to_durable.p{q}",
                            anchor_value=None
                            if name == "today"
                            else round(_percentile(paces["today"].latency_ms[task], q), 4),
                            met=(value <= limit) if goal_here and limit is not None else None,
                        )
                    )
        rows.append(
            row(
                f"all_tasks.{stream}.{name}.cpu_ms_per_frame",
                pace.cpu_ms / max(pace.frames, 1),
                "ms",
                goal=f"info: process CPU time per frame, both tasks, {how}",
                command=command,
            )
        )
        rows.append(
            row(
                f"all_tasks.{stream}.{name}.frames_per_s",
                pace.frames / pace.wall_s,
                "frames/s",
                goal=(">= 2x today" if name == "tuned" and fps is None else "info")
                + f": both tasks, {how}, {CONSUMERS} consumers",
                command=command,
                anchor=None if name == "today" else f"all_tasks.{stream}.today.frames_per_s",
                anchor_value=None
                if name == "today"
                else round(paces["today"].frames / paces["today"].wall_s, 4),
                met=(
                    pace.frames / pace.wall_s >= 2.0 * paces["today"].frames / paces["today"].wall_s
                )
                if name == "tuned" and fps is None
                else None,
            )
        )
    return rows


def model_sizes(models: Path, command: str) -> list[Row]:
    from appliance.inference.gate_ocr import DET_MODEL, REC_MODEL
    from appliance.inference.model_fold import DET_INT8_FOLD, REC_FOLD
    from appliance.inference.quantize import DET_INT8_MODEL

    goals = {
        DET_MODEL: "info: FP32 detector (today; tuned where INT8 does not pay)",
        REC_MODEL: "info: FP32 recognizer today loads (tuned too without its folded file)",
        DET_INT8_MODEL: "info: INT8 detector (yardlink models quantize)",
        DET_INT8_FOLD.folded: "info: INT8 detector, hardswish folded: tuned loads on a VNNI CPU",
        REC_FOLD.folded: "info: FP32 recognizer, affine steps and hardswish folded: tuned loads",
    }
    return [
        row(
            f"gate_ocr.model_bytes.{name}",
            (models / name).stat().st_size,
            "bytes",
            goal=goal,
            command=command,
        )
        for name, goal in goals.items()
        if (models / name).is_file()
    ]


def record_durable(durable: dict[tuple[int, str], float], event: dict[str, Any]) -> None:
    """The pipeline's publish hook: when each (frame, task) record became durable."""
    metadata = event.get("frame_metadata")
    if metadata:
        serial = json.loads(metadata).get("bench_serial")
        if serial is not None:
            durable[(int(serial), str(event["task"]))] = time.monotonic()


def main(argv: list[str] | None = None) -> int:
    """The accuracy part alone (``bench.inference`` runs it too, after the latency rows)."""
    from bench._common import command_for, parse_args, write_results

    args = parse_args("inference_ocr", argv)
    command = command_for("inference_ocr", args.quick)
    models = Path(__file__).resolve().parents[1] / "models"
    rows = model_sizes(models, command)
    rows += accuracy_rows(gate_ocr_tasks(models), 24 if args.quick else 500, command)
    write_results("inference_ocr", rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
