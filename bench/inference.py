"""Inference benchmark: each task's ``run()`` against the bare models on the same inputs.

For every task (``gate_ocr``, ``face_anonymize``) and the same frames:

* ``bare``: only the model calls, on tensors pre-computed from those frames
  (``task.model_calls(frame)``), through the runtime's own API
  (``session.run`` / ``set_tensor`` + ``invoke`` + ``get_tensor``) -- the anchor;
* ``task``: ``task.run(frame)``, i.e. pre-processing, the same model calls and
  post-processing (DB boxes, CTC, ISO 6346, BlazeFace decode + NMS);
* any path registered in ``EXTRA_PATHS`` (the daemon's frame-to-outbox path
  plugs in here: a factory that gets the task name and the loaded task and
  returns a blocking ``fn(frame_bgr)``), also compared to ``bare``.

Rows: p50 and p99 latency per task and path with the ratio to bare (issue
goal: p50 <= 1.10x, p99 <= 1.3x bare), sustained frames/s with every task on
every frame (anchor: the bare loop), and peak RSS (anchor: RSS before any
model is loaded).  Frames come from the synthetic yard camera (1280x720,
varied conditions) with a real face photo pasted in, so both tasks find
something.

    python -m bench.inference --quick
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil

from bench._common import Row, command_for, parse_args, row, write_results

NAME = "inference"
Frame = np.ndarray[Any, Any]
FrameFn = Callable[[Frame], object]
PathFactory = Callable[[str, Any], FrameFn]

# name -> factory(task_name, task) -> fn(frame_bgr), blocking until the frame is done.
EXTRA_PATHS: dict[str, PathFactory] = {}


def register_path(name: str, factory: PathFactory) -> None:
    """Add a path (e.g. ``"daemon"``: frame receipt to result durable in the outbox)."""
    EXTRA_PATHS[name] = factory


def _frames(count: int) -> list[Frame]:
    from skimage import data

    from appliance.sources.synthetic import SyntheticYardCamera

    face = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[0:300, 100:380]  # type: ignore[no-untyped-call]
    frames = []
    for frame in SyntheticYardCamera(seed=0).frames(count):
        image = frame.image_bgr.copy()
        image[400:700, 900:1180] = face
        frames.append(image)
    return frames


def _bare_call(model: Any, feeds: dict[str, Frame]) -> None:
    """One model call through the runtime's own API, bypassing ``LoadedModel.run``."""
    if model.runtime == "onnxruntime":
        model.session.run(None, feeds)
        return
    interpreter = model.interpreter
    for name, tensor in feeds.items():
        interpreter.set_tensor(model.input_index[name], tensor)
    interpreter.invoke()
    for index in model.output_index.values():
        interpreter.get_tensor(index)


def _interleaved_latencies(
    fns: dict[str, Callable[[int], object]], count: int, rounds: int
) -> dict[str, list[float]]:
    """Per-call latencies of each fn, alternating fns on each frame so that load from other
    processes on a shared machine hits every path alike."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for i in range(count):
            for name, fn in fns.items():
                started = time.perf_counter()
                fn(i)
                samples[name].append((time.perf_counter() - started) * 1000.0)
    return samples


def _sustained(
    fns: dict[str, Callable[[int], object]], count: int, seconds: float
) -> dict[str, float]:
    """Frames/s of each fn, run in alternating half-second slices so that load from other
    processes on a shared machine hits every fn alike."""
    done = dict.fromkeys(fns, 0)
    spent = dict.fromkeys(fns, 0.0)
    slice_s = 0.5
    for _ in range(max(1, round(seconds / slice_s / len(fns)))):
        for name, fn in fns.items():
            started = time.perf_counter()
            while time.perf_counter() - started < slice_s:
                fn(done[name] % count)
                done[name] += 1
            spent[name] += time.perf_counter() - started
    return {name: done[name] / spent[name] for name in fns}


def _percentile(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(NAME, argv)
    command = command_for(NAME, args.quick)
    count, rounds, seconds = (12, 2, 3.0) if args.quick else (60, 3, 20.0)

    from appliance.inference.settings import InferenceSettings
    from appliance.inference.tasks import build_tasks

    process = psutil.Process()
    baseline_rss_mb = process.memory_info().rss / 2**20
    frames = _frames(count)
    tasks, errors = build_tasks(InferenceSettings(), Path("models"))
    if errors:
        for name, error in errors.items():
            print(f"{name}: {error}")
        return 1

    rows: list[Row] = []
    bare_per_frame: dict[str, list[list[tuple[Any, dict[str, Frame]]]]] = {}
    for name, task in tasks.items():
        calls = [task.model_calls(frame) for frame in frames]  # type: ignore[attr-defined]
        bare_per_frame[name] = calls

        def bare(i: int, calls: list[Any] = calls) -> None:
            for model, feeds in calls[i]:
                _bare_call(model, feeds)

        paths: dict[str, FrameFn] = {"task": task.run}
        paths.update({p: factory(name, task) for p, factory in EXTRA_PATHS.items()})
        fns: dict[str, Callable[[int], object]] = {"bare": bare}
        for path, fn in paths.items():
            fns[path] = lambda i, fn=fn: fn(frames[i])  # type: ignore[misc]
        samples = _interleaved_latencies(fns, count, rounds)
        anchors = {q: _percentile(samples["bare"], q) for q in (50, 99)}
        for q, anchor in anchors.items():
            rows.append(
                row(
                    f"{name}.bare.p{q}",
                    anchor,
                    "ms",
                    goal="anchor: model calls only (session.run / invoke)",
                    command=command,
                )
            )
        for path in paths:
            for q, goal, limit in ((50, "<= 1.10x bare p50", 1.10), (99, "<= 1.3x bare p99", 1.3)):
                value = _percentile(samples[path], q)
                rows.append(
                    row(
                        f"{name}.{path}.p{q}",
                        value,
                        "ms",
                        goal=goal,
                        command=command,
                        anchor=f"{name}.bare.p{q}",
                        anchor_value=round(anchors[q], 4),
                        met=value <= limit * anchors[q],
                    )
                )

    def all_bare(i: int) -> None:
        for calls in bare_per_frame.values():
            for model, feeds in calls[i]:
                _bare_call(model, feeds)

    def all_tasks(i: int) -> None:
        for task in tasks.values():
            task.run(frames[i])

    fps = _sustained({"bare": all_bare, "task": all_tasks}, count, seconds)
    bare_fps, task_fps = fps["bare"], fps["task"]
    rows.append(
        row(
            "all_tasks.bare.frames_per_s",
            bare_fps,
            "frames/s",
            goal="anchor: model calls only",
            command=command,
        )
    )
    rows.append(
        row(
            "all_tasks.task.frames_per_s",
            task_fps,
            "frames/s",
            goal=">= 0.9x bare",
            command=command,
            anchor="all_tasks.bare.frames_per_s",
            anchor_value=round(bare_fps, 4),
            met=task_fps >= 0.9 * bare_fps,
        )
    )
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(
        row(
            "peak_rss",
            peak_rss_mb,
            "MiB",
            goal="fits a 1 GiB gateway with room for the daemon (< 600 MiB)",
            command=command,
            anchor="rss_before_models",
            anchor_value=round(baseline_rss_mb, 4),
            met=peak_rss_mb < 600,
        )
    )
    write_results(NAME, rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
