"""Inference benchmark: frame-to-outbox latency per task vs the bare models on the same inputs.

Issue 4: "p50/p99 frame-to-outbox latency per task (from frame receipt to the
result durable in the RocksDB outbox) vs a bare ``session.run`` / ``invoke``
loop on the same models and inputs (goal: p50 overhead <= 10%, p99 <= 1.3x
the bare p99); sustained frames/s; peak RSS."

Inputs: 1280x720 synthetic yard-camera frames (varied conditions) with a real
face photo pasted in, so both tasks find something, JPEG-encoded as a camera
pushes them.  Every push gets a distinct JPEG comment (same pixels, distinct
bytes), so the encrypted raw-frame store never skips a write because it has
already stored that exact frame.

For each task (``gate_ocr``, ``face_anonymize``), on the same frames, three
paths are timed on every frame in rotating order (so load from other
processes on the shared 2-core machine hits all of them alike):

* ``bare`` -- the anchor: only the model calls the task makes for that frame
  (``task.model_calls(frame)``, recorded beforehand), through the runtime's
  own API (``session.run`` / ``set_tensor`` + ``invoke`` + ``get_tensor``);
* ``task_call`` -- ``task.run(frame)`` on the decoded frame: pre-processing,
  the same model calls and post-processing, no daemon around it;
* ``frame_to_outbox`` -- the appliance path: the JPEG bytes in hand ->
  ``decode_frame`` (in a worker thread, as ``Daemon.submit_frame`` does) ->
  ``FrameProcessor.process`` (task in its worker thread, plate tokens, the
  original stored encrypted, the events record appended to a RocksDB outbox
  with durability "sync" in a directory on the real disk) -> the moment the
  pipeline publishes the record, i.e. right after ``Outbox.append`` returned.

The face task runs its regions on ``parallel_invokes`` interpreters of the
same model file side by side (2 by default, one per core), so its
``frame_to_outbox`` can beat the sequential ``bare`` anchor, which stays the
issue's goal row.  The informational ``bare_parallel`` rows time the same bare
calls spread over the task's interpreters on as many threads (next free thread
takes the next call; the runtime's own API, no task code), in the same
rotation, and ``frame_to_outbox_vs_bare_parallel`` is frame_to_outbox over
that: the frame path's overhead against an equally parallel bare loop.

Per-task attribution: the pipeline runs every *enabled* task on each frame,
and the site config can disable either task (``[inference.<task>] enabled =
false``), so each task's frame-to-outbox latency is measured through a
pipeline that has only that task -- a configuration the daemon really runs.
The ``pipeline_recorded`` rows are what that pipeline itself records in
telemetry (from ``Frame.received_at``, which ``decode_frame`` sets before it
decodes): informational.  The ``jpeg_decode`` rows (informational, timed in the
same rotation) are ``decode_frame`` alone, at the scale that task's pipeline
decodes at (``FrameProcessor.jpeg_reduction``: 1/2 for 1280x720 with the face
task alone, whose tiles are all shrunk to 128 px; full size when gate OCR
runs): the part of the frame-to-outbox gap that comes before any task can start.
The face task's tile inputs on that path are made from the 1/2-scale decode,
not from the full frame the anchor's inputs were recorded on; LiteRT's invoke
time does not depend on the pixel values, and the faces found are the same.

Sustained frames/s: the pipeline with both tasks, fed the way the daemon
does it (two consumers, each decoding and processing frames back to back),
against the bare loop of every model call of both tasks back to back, in
alternating slices.  Peak RSS: a real ``Daemon`` (both tasks, local API on a
loopback port, no sync) in a child process, fed frames through
``submit_frame``; anchor: its RSS before the daemon started.

    python -m bench.inference [--quick]
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import queue
import resource
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench._common import Row, command_for, parse_args, row, write_results

NAME = "inference"
REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
Image = np.ndarray[Any, Any]
Step = Callable[[int], Awaitable[None]]
_MAX_FRAME_BYTES = 8 << 20
_CAMERA = "gate-in"


# --------------------------------------------------------------------------- inputs


def _jpeg_frames(count: int) -> list[bytes]:
    """``count`` synthetic yard frames with a real face pasted in, as camera JPEGs."""
    from skimage import data

    from appliance.sources.synthetic import SyntheticYardCamera

    face = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[0:300, 100:380]  # type: ignore[no-untyped-call]
    frames = []
    for frame in SyntheticYardCamera(seed=0).frames(count):
        image = frame.image_bgr.copy()
        image[400:700, 900:1180] = face
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        frames.append(encoded.tobytes())
    return frames


def _unique(jpeg: bytes, serial: int) -> bytes:
    """The same JPEG with a comment segment carrying ``serial``: same pixels, distinct bytes."""
    comment = f"bench push {serial}".encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + jpeg[2:]


def _decode(jpeg: bytes) -> Image:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def _bare_call(model: Any, feeds: dict[str, Image]) -> None:
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


def _run_bare(calls: Sequence[tuple[Any, dict[str, Image]]]) -> None:
    for model, feeds in calls:
        _bare_call(model, feeds)


class _BarePool:
    """Long-lived threads, thread ``k`` calling ``models[k]`` through the runtime's own API.

    ``run(calls)`` spreads one frame's calls over them (the next free thread takes
    the next call, as the face task's model threads do) and returns when all are
    done; each call's model is replaced by the thread's own interpreter (all of the
    same file, same input names).  No task code on this path.
    """

    def __init__(self, models: Sequence[Any], by_shape: Sequence[Any] = ()) -> None:
        # a task that runs inputs of several shapes keeps, per thread, one interpreter per
        # shape (``by_shape[k].get(shape)``); thread k then takes the one for the call's input
        self._by_shape = list(by_shape) or [None] * len(models)
        self._work: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue() for _ in models]
        self._done: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, args=(model, work, shapes), daemon=True)
            for model, work, shapes in zip(models, self._work, self._by_shape, strict=True)
        ]
        for thread in self._threads:
            thread.start()

    def _serve(self, model: Any, work: queue.SimpleQueue[Any], by_shape: Any) -> None:
        while (job := work.get()) is not None:
            calls, next_call = job
            try:
                while (i := next(next_call)) < len(calls):
                    feeds = calls[i][1]
                    if by_shape is None:
                        _bare_call(model, feeds)
                    else:
                        _bare_call(by_shape.get(next(iter(feeds.values())).shape), feeds)
            except BaseException as exc:
                self._done.put(exc)
            else:
                self._done.put(None)

    def run(self, calls: Sequence[tuple[Any, dict[str, Image]]]) -> None:
        next_call = itertools.count()  # next() on it is atomic: each call taken once
        for work in self._work:
            work.put((calls, next_call))
        errors = [self._done.get() for _ in self._work]
        for error in errors:
            if error is not None:
                raise error

    def close(self) -> None:
        for work in self._work:
            work.put(None)
        for thread in self._threads:
            thread.join()


def _percentile(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


# --------------------------------------------------------------------------- the pipeline


@dataclass
class _Appliance:
    """The daemon's frame path, built the way ``Daemon.start`` builds it."""

    root: Path
    tasks: dict[str, Any]
    outbox: Any = None
    processors: dict[str, Any] = field(default_factory=dict)
    durable_at: dict[str, float] = field(default_factory=dict)
    recorded_ms: dict[str, float] = field(default_factory=dict)

    def open(self) -> None:
        from appliance.config import SamplingSettings
        from appliance.pipeline import FrameProcessor
        from appliance.privacy.blobstore import BlobStore
        from appliance.privacy.raw_frames import RawFrames
        from appliance.privacy.tokens import PlateTokenizer, load_plate_key
        from appliance.sampling import SamplingPolicy
        from appliance.telemetry import Telemetry
        from sync.outbox import Outbox
        from sync.settings import Durability, OutboxSettings

        root = self.root
        tokenizer = PlateTokenizer(load_plate_key(None, root / "plate.key"))
        blobs = BlobStore(root / "blobs", root / "blob-keys")
        raw_frames = RawFrames(blobs, root / "raw-index.jsonl", root / "uploads")
        settings = OutboxSettings(path=str(root / "outbox"), durability=Durability.SYNC)
        self.outbox = Outbox.open(settings.path, settings)
        telemetry = Telemetry({name: 1e9 for name in self.tasks})

        def processor(tasks: dict[str, Any], publish: Callable[[dict[str, Any]], None]) -> Any:
            return FrameProcessor(
                device_id="bench-01",
                site_id="bench",
                tasks=tasks,
                outbox=self.outbox,
                tokenizer=tokenizer,
                blobs=blobs,
                raw_frames=raw_frames,
                sampling=SamplingPolicy(SamplingSettings()),
                telemetry=telemetry,
                keep_raw_frames=True,
                publish=publish,
            )

        self._processor = processor
        # one pipeline per task alone (the other disabled in the site config), one with both
        configs = {name: {name: task} for name, task in self.tasks.items()}
        configs["all"] = dict(self.tasks)
        for key, tasks in configs.items():
            self.processors[key] = processor(tasks, self._published)

    def extra_processor(
        self, key: str, tasks: dict[str, Any], publish: Callable[[dict[str, Any]], None]
    ) -> Any:
        """Another pipeline on the same outbox and stores (closed with the others)."""
        self.processors[key] = self._processor(tasks, publish)
        return self.processors[key]

    def _published(self, event: dict[str, Any]) -> None:
        """Called by the pipeline right after a task's events record is durable."""
        self.durable_at[event["task"]] = time.perf_counter()
        self.recorded_ms[event["task"]] = float(event["latency_ms"])

    async def push(self, key: str, jpeg: bytes) -> float:
        """One frame as the daemon gets it; returns when it started (perf_counter)."""
        from appliance.sources.frames import decode_frame

        started = time.perf_counter()
        processor = self.processors[key]
        frame = await asyncio.to_thread(
            decode_frame,
            _CAMERA,
            jpeg,
            "image/jpeg",
            max_bytes=_MAX_FRAME_BYTES,
            reduction=processor.jpeg_reduction,  # as Daemon.submit_frame passes it
        )
        await processor.process(frame)
        return started

    async def close(self) -> None:
        for processor in self.processors.values():
            await asyncio.to_thread(processor.close)
        if self.outbox is not None:
            await self.outbox.close()


# --------------------------------------------------------------------------- measurements


async def _interleaved(steps: dict[str, Step], count: int, rounds: int) -> dict[str, list[float]]:
    """Latency (ms) of every step on every frame; the order of the steps rotates per frame."""
    samples: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    turn = 0
    for _ in range(rounds):
        for i in range(count):
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                started = time.perf_counter()
                await steps[name](i)
                samples[name].append((time.perf_counter() - started) * 1000.0)
            turn += 1
    return samples


async def _sustained(
    loops: dict[str, Callable[[float], Awaitable[int]]], seconds: float
) -> dict[str, float]:
    """Frames/s of each loop, run in alternating slices so machine load hits each alike."""
    done = dict.fromkeys(loops, 0)
    spent = dict.fromkeys(loops, 0.0)
    slice_s = 1.0
    for _ in range(max(1, round(seconds / slice_s / len(loops)))):
        for name, loop in loops.items():
            started = time.perf_counter()
            done[name] += await loop(started + slice_s)
            spent[name] += time.perf_counter() - started
    return {name: done[name] / spent[name] for name in loops}


def _peak_rss_of_daemon(frames_dir: Path, data_dir: Path) -> dict[str, float]:
    """Run ``_daemon_child`` in a fresh interpreter; its JSON report."""
    code = "import sys, bench.inference as b; b._daemon_child(sys.argv[1], sys.argv[2])"
    out = subprocess.run(
        [sys.executable, "-c", code, str(frames_dir), str(data_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    report: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return report


def _daemon_child(frames_dir: str, data_dir: str) -> None:
    """A real daemon (both tasks) fed every JPEG in ``frames_dir``; prints RSS in MiB."""
    import psutil

    from appliance.config import parse_config
    from appliance.daemon import Daemon

    config = parse_config(
        {
            "version": 1,
            "site": {"device_id": "bench-01", "site_id": "bench", "data_dir": data_dir},
            "outbox": {"path": str(Path(data_dir) / "outbox"), "durability": "sync"},
            "local_api": {"host": "127.0.0.1", "port": 0, "max_frame_bytes": _MAX_FRAME_BYTES},
            "sources": {"cameras": [{"id": _CAMERA}], "queue_bound": 8},
            "telemetry": {"interval_s": 3600},
            "models_dir": str(MODELS),
        },
        environ={},
    )
    before_mib = psutil.Process().memory_info().rss / 2**20
    paths = sorted(Path(frames_dir).glob("*.jpg"))

    async def run() -> None:
        daemon = Daemon(config)
        await daemon.start()
        try:
            for path in paths:
                await daemon.submit_frame(_CAMERA, path.read_bytes(), "image/jpeg", {})
                while daemon.queues.total_depth() >= 2:
                    await asyncio.sleep(0.01)
            deadline = time.monotonic() + 300
            while daemon.telemetry.results["face_anonymize"] < len(paths):
                if time.monotonic() > deadline:
                    raise TimeoutError("the daemon did not finish the frames")
                await asyncio.sleep(0.05)
        finally:
            await daemon.stop()

    asyncio.run(run())
    # VmHWM, not ru_maxrss: ru_maxrss survives fork + exec, so it would start at the parent's
    peak_kib = next(
        int(line.split()[1])
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    )
    peak_mib = peak_kib / 1024
    print(json.dumps({"before_mib": before_mib, "peak_mib": peak_mib, "frames": len(paths)}))


# --------------------------------------------------------------------------- main


async def _measure(
    command: str, quick: bool, work: Path
) -> tuple[list[Row], Callable[[], dict[str, float]]]:
    from appliance.inference.settings import InferenceSettings
    from appliance.inference.tasks import build_tasks
    from appliance.sources.frames import decode_frame

    count, rounds, seconds = (8, 2, 8.0) if quick else (30, 3, 40.0)
    jpegs = _jpeg_frames(count)
    images = [_decode(jpeg) for jpeg in jpegs]
    tasks, errors = build_tasks(InferenceSettings(), MODELS)
    if errors:
        raise SystemExit("; ".join(f"{name}: {error}" for name, error in errors.items()))

    frames_dir = work / "daemon-frames"
    frames_dir.mkdir()
    for i, jpeg in enumerate(jpegs):
        (frames_dir / f"{i:04d}.jpg").write_bytes(_unique(jpeg, 10**6 + i))

    appliance = _Appliance(work / "appliance", tasks)
    appliance.open()
    serial = 0
    rows: list[Row] = []
    try:
        for name, task in tasks.items():
            calls = [task.model_calls(image) for image in images]  # type: ignore[attr-defined]
            durable: list[float] = []
            recorded: list[float] = []

            async def bare(i: int, calls: list[Any] = calls) -> None:
                _run_bare(calls[i])

            models = getattr(task, "models", ())
            by_shape = getattr(task, "_by_shape", ())  # the face task's interpreters per shape
            pool = _BarePool(models, by_shape) if len(models) > 1 else None

            async def bare_parallel(
                i: int, calls: list[Any] = calls, pool: _BarePool | None = pool
            ) -> None:
                assert pool is not None
                pool.run(calls[i])

            async def task_call(i: int, task: Any = task) -> None:
                task.run(images[i])

            async def jpeg_decode(i: int, processor: Any = appliance.processors[name]) -> None:
                decode_frame(
                    _CAMERA,
                    jpegs[i],
                    "image/jpeg",
                    max_bytes=_MAX_FRAME_BYTES,
                    reduction=processor.jpeg_reduction,
                )

            async def frame_to_outbox(
                i: int,
                name: str = name,
                durable: list[float] = durable,
                recorded: list[float] = recorded,
            ) -> None:
                nonlocal serial
                serial += 1
                appliance.durable_at.clear()
                started = await appliance.push(name, _unique(jpegs[i], serial))
                durable.append((appliance.durable_at[name] - started) * 1000.0)
                recorded.append(appliance.recorded_ms[name])

            await frame_to_outbox(0)  # warm the pipeline's worker thread and the outbox
            durable.clear()
            recorded.clear()
            steps: dict[str, Step] = {
                "bare": bare,
                "task_call": task_call,
                "frame_to_outbox": frame_to_outbox,
                "jpeg_decode": jpeg_decode,
            }
            if pool is not None:  # the face task's regions on parallel interpreters
                steps["bare_parallel"] = bare_parallel
            try:
                samples = await _interleaved(steps, count, rounds)
            finally:
                if pool is not None:
                    pool.close()
            samples["frame_to_outbox"] = durable  # to the publish (record durable), not return
            samples["pipeline_recorded"] = recorded
            rows += _latency_rows(name, samples, command)

        all_calls = [
            [call for task in tasks.values() for call in task.model_calls(image)]  # type: ignore[attr-defined]
            for image in images
        ]

        async def bare_loop(deadline: float) -> int:
            done = 0
            while time.perf_counter() < deadline:
                _run_bare(all_calls[done % count])
                done += 1
            return done

        async def pipeline_loop(deadline: float) -> int:
            done = 0

            async def consumer() -> None:  # the daemon runs two of these
                nonlocal done, serial
                while time.perf_counter() < deadline:
                    serial += 1
                    await appliance.push("all", _unique(jpegs[serial % count], serial))
                    done += 1

            await asyncio.gather(consumer(), consumer())
            return done

        fps = await _sustained({"bare": bare_loop, "pipeline": pipeline_loop}, seconds)
        rows += await _gate_ocr_rows(appliance, tasks["face_anonymize"], quick, command)
    finally:
        await appliance.close()
    rows.append(
        row(
            "all_tasks.bare.frames_per_s",
            fps["bare"],
            "frames/s",
            goal="anchor: every model call of both tasks back to back (session.run / invoke)",
            command=command,
        )
    )
    rows.append(
        row(
            "all_tasks.frame_to_outbox.frames_per_s",
            fps["pipeline"],
            "frames/s",
            goal=">= 0.9x bare (JPEG decode + both tasks + durable outbox, 2 consumers)",
            command=command,
            anchor="all_tasks.bare.frames_per_s",
            anchor_value=round(fps["bare"], 4),
            met=fps["pipeline"] >= 0.9 * fps["bare"],
        )
    )
    return rows, lambda: _peak_rss_of_daemon(frames_dir, work / "daemon")


async def _gate_ocr_rows(
    appliance: _Appliance, face_task: Any, quick: bool, command: str
) -> list[Row]:
    """Issue 20: today's vs the tuned gate OCR, accuracy and both tasks at camera pace."""
    from bench import inference_ocr

    eval_frames, scenes = (24, 8) if quick else (500, 24)
    ocr_tasks = inference_ocr.gate_ocr_tasks(MODELS)
    durable: dict[tuple[int, str], float] = {}
    keys = iter(itertools.count())

    def open_processor(tasks: dict[str, Any]) -> Any:
        publish = functools.partial(inference_ocr.record_durable, durable)
        return appliance.extra_processor(f"ocr-{next(keys)}", tasks, publish)

    rows = inference_ocr.model_sizes(MODELS, command)
    face_tasks = inference_ocr.face_tasks(MODELS, face_task)
    rows += await inference_ocr.paced_rows(
        open_processor, durable, ocr_tasks, face_tasks, scenes, command
    )
    rows += inference_ocr.accuracy_rows(ocr_tasks, eval_frames, command)
    return rows


def _latency_rows(name: str, samples: dict[str, list[float]], command: str) -> list[Row]:
    anchors = {q: _percentile(samples["bare"], q) for q in (50, 99)}
    rows = [
        row(
            f"{name}.bare.p{q}",
            anchor,
            "ms",
            goal="anchor: the task's model calls only (session.run / invoke), same inputs",
            command=command,
        )
        for q, anchor in anchors.items()
    ]
    goals = {50: ("<= 1.10x bare p50", 1.10), 99: ("<= 1.3x bare p99", 1.3)}
    for path in ("frame_to_outbox", "task_call", "pipeline_recorded", "jpeg_decode"):
        for q, (goal, limit) in goals.items():
            value = _percentile(samples[path], q)
            met: bool | None = value <= limit * anchors[q]
            if path == "task_call":
                goal = f"{goal} (task.run alone: pre/post-processing, no daemon)"
            elif path == "pipeline_recorded":
                goal = "info: what the pipeline records (from decode_frame's start)"
                met = None
            elif path == "jpeg_decode":
                goal = "info: decode_frame alone, at the scale this task's pipeline decodes at"
                met = None
            rows.append(
                row(
                    f"{name}.{path}.p{q}",
                    value,
                    "ms",
                    goal=goal,
                    command=command,
                    anchor=f"{name}.bare.p{q}",
                    anchor_value=round(anchors[q], 4),
                    met=met,
                )
            )
    if "bare_parallel" in samples:
        rows += _parallel_rows(name, samples, command)
    return rows


PARALLEL_GOAL = 1.10  # issue 20: the face frame path against the equally parallel bare loop


def _parallel_rows(name: str, samples: dict[str, list[float]], command: str) -> list[Row]:
    """The same bare calls spread over the task's parallel interpreters, and
    frame_to_outbox against that: issue 20's goal for the face task at p50 (the older
    goal rows above stay against the sequential loop); p99 is informational."""
    rows = []
    for q in (50, 99):
        parallel = _percentile(samples["bare_parallel"], q)
        rows.append(
            row(
                f"{name}.bare_parallel.p{q}",
                parallel,
                "ms",
                goal="info: the same bare invoke calls, spread over the task's interpreters "
                "(same model file) on as many threads, next free thread takes the next call; "
                "no task code",
                command=command,
                anchor=f"{name}.bare.p{q}",
                anchor_value=round(_percentile(samples["bare"], q), 4),
            )
        )
        to_outbox = _percentile(samples["frame_to_outbox"], q)
        what = (
            f"frame_to_outbox p{q} / bare_parallel p{q}, the frame path's overhead against "
            "an equally parallel bare loop"
        )
        rows.append(
            row(
                f"{name}.frame_to_outbox_vs_bare_parallel.p{q}",
                to_outbox / parallel,
                "x",
                goal=f"<= {PARALLEL_GOAL:.2f}x: {what}" if q == 50 else f"info: {what}",
                command=command,
                met=to_outbox / parallel <= PARALLEL_GOAL if q == 50 else None,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(NAME, argv)
    command = command_for(NAME, args.quick)
    (REPO / "var").mkdir(exist_ok=True)
    # on the real disk (not tmpfs), so "sync" durability pays for a real fsync
    with tempfile.TemporaryDirectory(prefix="bench-inference-", dir=REPO / "var") as tmp:
        work = Path(tmp)
        rows, daemon_rss = asyncio.run(_measure(command, args.quick, work))
        rss = daemon_rss()
    rows.append(
        row(
            "daemon.peak_rss",
            rss["peak_mib"],
            "MiB",
            goal="a real daemon with both tasks, after frames: fits a 1 GiB gateway (< 600 MiB)",
            command=command,
            anchor="daemon.rss_before_start",
            anchor_value=round(rss["before_mib"], 4),
            met=rss["peak_mib"] < 600,
        )
    )
    rows.append(
        row(
            "bench_process.peak_rss",
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "MiB",
            goal="info: this benchmark process (models, pipelines, decoded frames, tensors)",
            command=command,
        )
    )
    write_results(NAME, rows, args.out)
    print(f"(cpus: {os.cpu_count()}, frames in the daemon RSS run: {rss['frames']:.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
