"""Face task latency with both tasks running, against the bare model calls in the same run.

Issue 20's goal row "face_anonymize p99 <= 40 ms, both tasks enabled".  Frames:
the synthetic yard camera's (real faces pasted in), decoded at full size as when
gate OCR runs.  Two phases, each timing on every frame, in rotating order:

* ``task``: ``FaceAnonymizeTask.run(frame)`` (scans, model calls on the task's two
  interpreter threads, decoding, merging);
* ``bare``: the anchor: the same model calls (``task.model_calls``) through
  LiteRT's own ``set_tensor``/``invoke``/``get_tensor``, spread over the task's
  interpreters on as many threads, the next free thread taking the next call.

Phase ``alone``: nothing else runs.  Phase ``with_ocr``: gate OCR runs
``GateOcrTask.run`` back to back on another thread the whole time (both tasks on
the two cores, as in the daemon).  Both ``task`` and ``bare`` run as urgent work
(``URGENT.running()``), as the pipeline runs the face task: gate OCR holds each of
its model calls while one runs (at most its ``wait_for_urgent_ms``), so the task
and its anchor get the same precedence.  Rows: p50/p99 of each, the task over the
bare loop, and the process CPU time per face frame (alone).  Not measured here: the
JPEG decode and the outbox append around the task (``bench.inference``).
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.inference.face_anonymize import FACE_MODEL, load_face_anonymize
from appliance.inference.gate_ocr import DET_MODEL, REC_MODEL, load_gate_ocr
from appliance.inference.model_files import model_path
from appliance.inference.settings import FaceAnonymizeSettings, GateOcrSettings
from appliance.inference.urgent_work import URGENT
from appliance.sources.synthetic import SyntheticYardCamera
from bench._common import Row, command_for, parse_args, row, write_results

MODELS = Path(__file__).resolve().parents[1] / "models"
SEED = 2020
Image = np.ndarray[Any, Any]
Calls = Sequence[tuple[Any, dict[str, Image]]]


def _bare_call(model: Any, feeds: dict[str, Image]) -> None:
    interpreter = model.interpreter
    for name, tensor in feeds.items():
        interpreter.set_tensor(model.input_index[name], tensor)
    interpreter.invoke()
    for index in model.output_index.values():
        interpreter.get_tensor(index)


class _BarePool:
    """One long-lived thread per interpreter set; ``run(calls)`` spreads a frame's calls
    over them (next free thread takes the next call) and returns when all are done."""

    def __init__(self, resolvers: Sequence[Callable[[tuple[int, ...]], Any]]) -> None:
        self._work: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue() for _ in resolvers]
        self._done: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, args=(resolve, work), daemon=True)
            for resolve, work in zip(resolvers, self._work, strict=True)
        ]
        for thread in self._threads:
            thread.start()

    def _serve(
        self, resolve: Callable[[tuple[int, ...]], Any], work: queue.SimpleQueue[Any]
    ) -> None:
        while (job := work.get()) is not None:
            calls, next_call = job
            while (i := next(next_call)) < len(calls):
                feeds = calls[i][1]
                _bare_call(resolve(next(iter(feeds.values())).shape), feeds)
            self._done.put(None)

    def run(self, calls: Calls) -> None:
        next_call = itertools.count()
        for work in self._work:
            work.put((calls, next_call))
        for _ in self._work:
            self._done.get()

    def close(self) -> None:
        for work in self._work:
            work.put(None)
        for thread in self._threads:
            thread.join()


def _ocr_load(ocr: Any, frames: list[Image], stop: threading.Event) -> None:
    for frame in itertools.cycle(frames):
        if stop.is_set():
            return
        ocr.run(frame)


def _urgent(step: Callable[[Any], object], argument: Any) -> object:
    """``step(argument)`` as urgent work, as the pipeline runs the face task."""
    with URGENT.running():
        return step(argument)


def _phase(
    steps: dict[str, Callable[[int], object]], count: int, rounds: int
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for turn, i in enumerate(itertools.product(range(rounds), range(count))):
        for name in names[turn % len(names) :] + names[: turn % len(names)]:
            started = time.perf_counter()
            steps[name](i[1])
            samples[name].append((time.perf_counter() - started) * 1000.0)
    return samples


def _decoded(jpeg: bytes) -> Image:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("a frame the benchmark encoded itself cannot be decoded")
    return image


def _pct(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def main(argv: list[str] | None = None) -> None:
    args = parse_args("face_latency", argv)
    count, rounds = (10, 2) if args.quick else (40, 5)
    camera = SyntheticYardCamera(SEED)
    frames = [_decoded(f.encode()) for f in camera.frames(count)]
    face = load_face_anonymize(FaceAnonymizeSettings(), model_path(FACE_MODEL, MODELS))
    ocr = load_gate_ocr(
        GateOcrSettings(), model_path(DET_MODEL, MODELS), model_path(REC_MODEL, MODELS)
    )
    calls = [face.model_calls(frame) for frame in frames]
    pool = _BarePool([by_shape.get for by_shape in face._by_shape])
    steps: dict[str, Callable[[int], object]] = {
        "task": lambda i: _urgent(face.run, frames[i]),
        "bare": lambda i: _urgent(pool.run, calls[i]),
    }
    try:
        _phase(steps, min(count, 4), 1)  # warm-up: every interpreter and shape made
        cpu_started = time.process_time()
        alone = _phase({"task": steps["task"]}, count, 1)
        cpu_per_frame = (time.process_time() - cpu_started) * 1000.0 / count
        alone = {**alone, **_phase(steps, count, rounds)}
        stop = threading.Event()
        load = threading.Thread(target=_ocr_load, args=(ocr, frames, stop), daemon=True)
        load.start()
        try:
            with_ocr = _phase(steps, count, rounds)
        finally:
            stop.set()
            load.join()
    finally:
        pool.close()
        face.close()
    command = command_for("face_latency", args.quick)
    rows: list[Row] = [
        row("face_calls_per_frame", len(calls[0]), "calls", goal="reference", command=command),
        row("face_cpu_per_frame_alone", cpu_per_frame, "ms", goal="reference", command=command),
    ]
    for phase, samples in (("alone", alone), ("with_ocr", with_ocr)):
        for q in (50, 99):
            bare = _pct(samples["bare"], q)
            task = _pct(samples["task"], q)
            goal = "<= 40 ms" if (phase, q) == ("with_ocr", 99) else "reference"
            met = task <= 40.0 if goal != "reference" else None
            rows.append(row(f"face_bare_{phase}_p{q}", bare, "ms", goal="anchor", command=command))
            rows.append(
                row(
                    f"face_task_{phase}_p{q}",
                    task,
                    "ms",
                    goal=goal,
                    command=command,
                    anchor=f"face_bare_{phase}_p{q}",
                    anchor_value=bare,
                    met=met,
                )
            )
    write_results("face_latency", rows, args.out)


if __name__ == "__main__":
    main()
