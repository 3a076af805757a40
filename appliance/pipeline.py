"""From a decoded frame to durable outbox records: inference, privacy, storage, sampling.

For one frame: every loaded task runs in its own bounded worker thread (an urgent
task's run, the face task's, counts as urgent work from before any run is
submitted, so the other tasks' model calls hold until it ends:
``appliance.inference.urgent_work``); plate (and free text) values are replaced
by HMAC tokens; the original frame is stored encrypted; one ``events`` record
per task is appended as soon as that task is done (its latency ends when
``append`` returns); a sampled frame is redacted (faces, plates and free text
blurred: ``appliance.privacy.redaction``), stored encrypted and its ``BlobRef``
appended to ``raw_sampled``; every kept original is indexed with the boxes to
hide in it, so the cloud can ask for it later and get a copy redacted on demand
(``appliance.frame_keeping``).  Only then is the frame done (the spool moves its
file after that).

A spool frame's ``events`` records are stored all at once instead, in one atomic
``append_many`` once every task is done: its file is read again when the outbox
refuses the frame, so the frame's records must be all stored or none, or the
re-read would store again those that were (duplicates in the cloud).  The call
carries the file's receipt (``appliance.sources.spool_stored``), stored with the
records, so a file read again after a crash is known stored and not run again.  Its
records' latency is then the slowest task's.  What comes after the ``events``
records (the ``raw_sampled`` copy, another class, so not in the same atomic call;
the kept original's index) never fails a frame whose records are stored: it is
logged (a sample not stored also counted per camera), and the frame is done.

A task that raises on a frame costs that task's record only (the others go on):
it is counted (``task_errors``; the last one is kept for ``/v1/status``) and
logged with the task, the camera and the error, at most once per task and
minute (``LogThrottle``) with the count of repeats held back, so a model failing
on every frame says why without writing a line per frame.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

import numpy as np

from appliance.errors import error_summary
from appliance.frame_keeping import FrameKeeper
from appliance.inference.tasks import FACE_KINDS, TASKS, Detection, InferenceTask, TaskResult
from appliance.inference.urgent_work import UrgentRun
from appliance.log_throttle import LogThrottle
from appliance.privacy.blobstore import BlobStore
from appliance.privacy.raw_frames import RawFrames
from appliance.privacy.redaction import TEXT_PII_KINDS, Redaction, RedactionPolicy
from appliance.privacy.tokens import PlateTokenizer
from appliance.sampling import SamplingPolicy
from appliance.sources.frame_metadata import encode_frame_metadata
from appliance.sources.frames import Frame
from appliance.telemetry import Telemetry
from sync.outbox import Outbox
from sync.protocol import Stream

__all__ = ["FrameProcessor", "ResultTap"]

# (task name, frame, result or None, error or None), on the event loop after each run
ResultTap = Callable[[str, Frame, TaskResult | None, BaseException | None], None]

_log = logging.getLogger(__name__)

TASK_ERROR_LOG_INTERVAL_S = 60.0  # at most one log line per task and interval


class FrameProcessor:
    def __init__(
        self,
        *,
        device_id: str,
        site_id: str,
        tasks: dict[str, InferenceTask],
        outbox: Outbox,
        tokenizer: PlateTokenizer,
        blobs: BlobStore,
        raw_frames: RawFrames,
        sampling: SamplingPolicy,
        telemetry: Telemetry,
        keep_raw_frames: bool,
        publish: Callable[[dict[str, Any]], None] = lambda event: None,
        task_error_log: LogThrottle | None = None,
        redaction: RedactionPolicy | None = None,  # default: the registered tasks'
    ) -> None:
        self._device_id = device_id
        self._site_id = site_id
        self._tasks = tasks
        self._outbox = outbox
        self._tokenizer = tokenizer
        self._keeper = FrameKeeper(
            blobs=blobs,
            raw_frames=raw_frames,
            outbox=outbox,
            telemetry=telemetry,
            keep_originals=keep_raw_frames,
        )
        self._sampling = sampling
        self._telemetry = telemetry
        self._publish = publish
        self._task_error_log = task_error_log or LogThrottle(TASK_ERROR_LOG_INTERVAL_S)
        self._redaction_policy = redaction or TASKS.redaction_policy()
        self._workers = {name: ThreadPoolExecutor(1, f"task-{name}") for name in tasks}
        self._result_taps: list[ResultTap] = []  # model updates' shadow window listens here

    def close(self) -> None:
        for pool in self._workers.values():
            pool.shutdown(wait=True)

    def swap_task(self, name: str, task: InferenceTask) -> InferenceTask:
        """Serve task ``name`` with ``task`` from the next frame on; returns the old one.

        Called on the event loop, so it falls between two frames: a frame's runs are
        all submitted at once with the task objects of that moment, so frames already
        started finish on the old model, none is dropped, none sees a half-loaded one.
        """
        old = self._tasks[name]
        self._tasks[name] = task
        return old

    async def runs_ended(self, name: str) -> None:
        """Return once every run of task ``name`` submitted so far has ended: after
        ``swap_task``, the old task's last frame is done and it may be closed."""
        try:  # the worker takes runs in order: a no-op behind them ends after them
            await asyncio.get_running_loop().run_in_executor(self._workers[name], _nothing)
        except RuntimeError:  # the processor is closed: its workers ran every frame out
            return

    def add_result_tap(self, tap: ResultTap) -> None:
        """``tap(name, frame, result, error)`` is called on the loop after each task run."""
        self._result_taps.append(tap)

    def remove_result_tap(self, tap: ResultTap) -> None:
        if tap in self._result_taps:
            self._result_taps.remove(tap)

    @staticmethod
    def run_on_frame(task: InferenceTask, frame: Frame) -> TaskResult:
        """Run ``task`` on ``frame`` exactly as the pipeline does (blocking)."""
        return _run(task, frame)

    def jpeg_reduction(self, width: int, height: int) -> int:
        """How many times smaller a ``width`` x ``height`` JPEG may be decoded for every
        task (``decode_frame(reduction=...)``): 1 unless each task says it can work from
        less (the face task alone: its finest tile's need, 2 for 1280x720)."""
        reductions = [
            task.jpeg_reduction(width, height) if isinstance(task, _ReducedInput) else 1
            for task in self._tasks.values()
        ]
        return min(reductions, default=1)

    def _start_tasks(self, frame: Frame) -> dict[str, asyncio.Future[TaskResult]]:
        """Every task's run on ``frame``, submitted to its worker thread now.  The urgent
        tasks' runs count as urgent work from before any of them is submitted (so no
        task's thread starts first without seeing them) to each one's end, or to its
        cancellation while still queued: the other tasks' model calls wait for them
        (``URGENT.let_pass``)."""
        loop = asyncio.get_running_loop()
        urgent = {
            name: UrgentRun()
            for name, task in self._tasks.items()
            if isinstance(task, _Urgent) and task.urgent
        }
        runs: dict[str, asyncio.Future[TaskResult]] = {}
        try:
            for name, task in self._tasks.items():
                announced = urgent.get(name)
                if announced is None:
                    runs[name] = loop.run_in_executor(self._workers[name], _run, task, frame)
                    continue
                run = loop.run_in_executor(self._workers[name], _run_urgent, task, frame, announced)
                run.add_done_callback(functools.partial(_dropped_if_cancelled, announced))
                runs[name] = run
        finally:
            for name, announced in urgent.items():
                if name not in runs:  # closed under the frame: never runs
                    announced.end()
        return runs

    async def _run_task(
        self, name: str, run: asyncio.Future[TaskResult], frame: Frame
    ) -> TaskResult | None:
        try:
            result = await run
        except Exception as exc:  # noqa: BLE001 - one task failing must not stop the others
            self._task_failed(name, frame, exc)
            for tap in self._result_taps:
                tap(name, frame, None, exc)
            return None
        for tap in self._result_taps:
            tap(name, frame, result, None)
        return result

    def _task_failed(self, name: str, frame: Frame, exc: Exception) -> None:
        """Count it; log it unless this task already logged within the interval."""
        summary = error_summary(exc)
        self._telemetry.task_errors[name] += 1
        self._telemetry.task_last_error[name] = summary
        held_back = self._task_error_log.admit(name)
        if held_back is None:
            return
        repeats = (
            f" ({held_back} more failures of this task since its last line, not logged)"
            if held_back
            else ""
        )
        _log.error(
            "task %s failed on a frame from %s: %s%s",
            name,
            frame.camera_id,
            summary,
            repeats,
            exc_info=exc,
            extra={
                "task": name,
                "camera": frame.camera_id,
                "error": summary,
                "suppressed": held_back,
            },
        )

    def _result_json(self, detection: Detection) -> dict[str, Any]:
        value = detection.value
        if detection.kind in TEXT_PII_KINDS and value:
            value = self._tokenizer.token(value)
        x, y, w, h = detection.box
        return {
            "kind": detection.kind,
            "value": value,
            "confidence": round(float(detection.confidence), 4),
            "valid": detection.valid,
            "box": [int(x), int(y), int(x + w), int(y + h)],
        }

    async def process(self, frame: Frame, *, receipt: bytes | None = None) -> list[int]:
        """Run every task on ``frame``; returns the events seqs once they are durable.

        Each task's record is appended as soon as that task is done (group
        commit batches them), so a fast task's latency is not the slow one's.
        When an append is refused (``OutboxFull``, ``OutboxDiskFull``...), the first
        such error is raised once every task's append has ended.  A spool frame's
        records are appended together, in one atomic call, once every task is done:
        refused, none of them is stored (its file is read again); ``receipt`` (the
        spool file's) is stored with them.
        """
        self._telemetry.frames[frame.camera_id] += 1
        # the tasks first: they are the latency; the original's encrypted copy runs beside
        runs = self._start_tasks(frame)
        raw_stored: asyncio.Task[str | None] = asyncio.create_task(
            self._keeper.store_original(frame)
        )
        done: list[tuple[TaskResult, int]] = []  # durable so far, in completion order
        try:
            if frame.spool_path is None:
                await self._append_each_when_done(runs, frame, raw_stored, done)
            else:  # read again when refused: all of its records stored, or none
                await self._append_all_at_once(runs, frame, raw_stored, done, receipt)
        finally:
            await raw_stored
        seqs = [seq for _, seq in done]
        redaction = self._redaction(done)
        if redaction is None or not redaction.complete:
            return seqs  # never ship a frame when what to hide in it is unknown
        confidences = [
            float(d.confidence) for r, _ in done for d in r.detections if d.kind not in FACE_KINDS
        ]
        if self._sampling.decide(min(confidences) if confidences else None, time.time()):
            await self._keeper.store_sample(frame, redaction.boxes, min(seqs))
        return seqs

    async def _append_each_when_done(
        self,
        runs: dict[str, asyncio.Future[TaskResult]],
        frame: Frame,
        raw_stored: asyncio.Task[str | None],
        done: list[tuple[TaskResult, int]],
    ) -> None:
        """Each task's record appended as soon as that task is done (a pushed frame)."""
        # every task's append ends (stored or refused) before the frame counts as done:
        # the outbox must not be closed under a late one
        outcomes = await asyncio.gather(
            *(
                self._task_to_outbox(name, run, frame, raw_stored, done)
                for name, run in runs.items()
            ),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _append_all_at_once(
        self,
        runs: dict[str, asyncio.Future[TaskResult]],
        frame: Frame,
        raw_stored: asyncio.Task[str | None],
        done: list[tuple[TaskResult, int]],
        receipt: bytes | None,
    ) -> None:
        """Every task's record in one atomic append once all are done (a spool frame):
        when the outbox refuses one, none is stored and the file can be read again;
        stored, so is the file's ``receipt``."""
        ran = await asyncio.gather(
            *(self._run_task(name, run, frame) for name, run in runs.items())
        )
        results = [result for result in ran if result is not None]
        if results:
            await self._store_results(results, frame, raw_stored, done, receipt)

    async def _store_results(
        self,
        results: list[TaskResult],
        frame: Frame,
        raw_stored: asyncio.Task[str | None],
        done: list[tuple[TaskResult, int]],
        receipt: bytes | None = None,
    ) -> None:
        """Append the results' ``events`` records in one atomic call (with ``receipt``),
        count them durable, and index the kept original with what is durable so far."""
        raw_sha256 = await asyncio.shield(raw_stored)
        records = [self._record(result, frame, raw_sha256) for result in results]
        payloads = list(map(_encoded, records))
        if len(payloads) == 1 and receipt is None:  # a pushed frame's task: the outbox's
            seqs = [await self._outbox.append(Stream.EVENTS, payloads[0])]  # fast path
        else:
            seqs = await self._outbox.append_many(Stream.EVENTS, payloads, receipt=receipt)
        for result, record, seq in zip(results, records, seqs, strict=True):
            self._count_durable(result, record, seq, frame)
            done.append((result, seq))
        seqs_so_far = tuple(seq for _, seq in done)  # a spool frame's: all at once
        await self._keeper.index_original(frame, raw_sha256, self._redaction(done), seqs_so_far)

    def _redaction(self, done: list[tuple[TaskResult, int]]) -> Redaction | None:
        return self._redaction_policy.redaction_of((r for r, _ in done), self._tasks)

    async def _task_to_outbox(
        self,
        name: str,
        run: asyncio.Future[TaskResult],
        frame: Frame,
        raw_stored: asyncio.Task[str | None],
        done: list[tuple[TaskResult, int]],
    ) -> None:
        result = await self._run_task(name, run, frame)
        if result is not None:
            await self._store_results([result], frame, raw_stored, done)

    def _record(self, result: TaskResult, frame: Frame, raw_sha256: str | None) -> dict[str, Any]:
        """The task's ``events`` record (its ``seq`` is the outbox's to give)."""
        submitted_ms = (time.monotonic() - frame.received_at) * 1000.0
        return {
            "device_id": self._device_id,
            "site_id": self._site_id,
            "seq": 0,
            "event_time": frame.event_time,
            "model_name": result.model_name,
            "model_version": result.model_version,
            "camera_id": frame.camera_id,
            "task": result.task,
            "latency_ms": round(submitted_ms, 2),
            "sla_violated": submitted_ms > self._telemetry.slas_ms.get(result.task, 1e18),
            "results": [self._result_json(d) for d in result.detections],
            "raw_sha256": raw_sha256,
            "frame_metadata": encode_frame_metadata(frame.metadata),
        }

    def _count_durable(
        self, result: TaskResult, record: dict[str, Any], seq: int, frame: Frame
    ) -> None:
        """The record is durable: its latency ends now; telemetry and ``/v1/events``."""
        durable_ms = (time.monotonic() - frame.received_at) * 1000.0
        by_kind: dict[str, list[float]] = {}
        for detection in result.detections:
            by_kind.setdefault(detection.kind, []).append(float(detection.confidence))
        violated = self._telemetry.record_result(result.task, durable_ms, by_kind)
        self._publish(
            {**record, "seq": seq, "latency_ms": round(durable_ms, 2), "sla_violated": violated}
        )


@runtime_checkable
class _ReducedInput(Protocol):
    """A task that can run on a JPEG decoded smaller (``Frame.reduced_by``)."""

    def jpeg_reduction(self, width: int, height: int) -> int: ...

    def run(self, image_bgr: np.ndarray[Any, Any], *, reduced_by: int = 1) -> TaskResult: ...


@runtime_checkable
class _Urgent(Protocol):
    """A task whose runs go ahead of the others' model calls (the face task)."""

    @property
    def urgent(self) -> bool: ...


def _run_urgent(task: InferenceTask, frame: Frame, announced: UrgentRun) -> TaskResult:
    """``_run`` for an urgent task: its urgent work (announced at submission) ends with it."""
    announced.starting()
    try:
        return _run(task, frame)
    finally:
        announced.end()


def _dropped_if_cancelled(announced: UrgentRun, run: asyncio.Future[TaskResult]) -> None:
    """A run cancelled while queued never starts: its urgent work ends here."""
    if run.cancelled():
        announced.dropped()


def _encoded(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


def _run(task: InferenceTask, frame: Frame) -> TaskResult:
    """``task.run`` on the frame's pixels, in the task's worker thread."""
    if frame.reduced_by != 1 and isinstance(task, _ReducedInput):
        return task.run(frame.pixels, reduced_by=frame.reduced_by)
    return task.run(frame.image_bgr)  # full size: ``pixels``, or decoded once (in this thread)


def _nothing() -> None:
    """A worker's no-op: queued behind its runs, it marks where they end."""
