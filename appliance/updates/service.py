"""Model updates inside the running appliance: the agent joined to the frame pipeline.

``ModelUpdates.start`` (at daemon start, before any frame) puts each task's
serving release in place of the pinned model.  ``install`` verifies, stages
and validates a release (``UpdateAgent``), then ``activate`` switches the
pipeline to it between two frames, runs the shadow window against the old
model, and commits, or swaps the old model back and rolls back.  A committed
release is then watched (``health.py``) for ``health_watch_s``: a regression
rolls it back to the previous slot.  A technician may roll back
(``rollback``) at any time, also during a shadow window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError
from appliance.inference.results import InferenceTask
from appliance.inference.settings import InferenceSettings
from appliance.pipeline import FrameProcessor
from appliance.updates.agent import AGENT, Candidate, UpdateAgent
from appliance.updates.download import Fetcher, download_artifact, fetch_manifest
from appliance.updates.errors import NothingToRollBack
from appliance.updates.health import HEALTH_REGRESSION, HealthWatch, HealthWindow
from appliance.updates.release_tasks import close_task, sla_ms
from appliance.updates.settings import UpdateSettings
from appliance.updates.shadow import ShadowRun, ShadowVerdict, ShadowWindow
from sync.protocol import ModelAssignment, ModelInfo

__all__ = ["ModelUpdates"]

_log = logging.getLogger(__name__)

PinnedLoader = Callable[[str], InferenceTask]  # blocking: the task from models_dir


class ModelUpdates:
    def __init__(
        self,
        agent: UpdateAgent,
        processor: FrameProcessor,
        tasks: dict[str, InferenceTask],
        *,
        settings: UpdateSettings,
        inference: InferenceSettings,
        load_pinned: PinnedLoader,
        backlog: Callable[[], int] = lambda: 0,
    ) -> None:
        self.agent = agent
        self._processor = processor
        self._tasks = tasks  # the pipeline's own dict: what serves now
        self._settings = settings
        self._inference = inference
        self._load_pinned = load_pinned
        self._backlog = backlog  # frames waiting in the camera queues
        self._shadows: dict[str, ShadowRun] = {}
        self._abort: dict[str, tuple[str, str]] = {}  # task -> (actor, reason) during a shadow
        self._activation = asyncio.Lock()
        self._watches: dict[str, HealthWatch] = {}  # task -> its committed release's watch
        self._watch_tasks: set[asyncio.Task[None]] = set()
        self.last_verdicts: dict[str, dict[str, Any]] = {}

    async def start(self) -> list[str]:
        """Recover the slots, then serve each task's release (before any frame)."""
        notes = await self.agent.start()
        for name in list(self.agent.state.tasks):
            if name not in self._tasks or self.agent.serving(name)[0] is None:
                continue
            try:
                release = await self.agent.load_serving(name)
            except ApplianceError as exc:
                _log.error("release of %s not loaded, pinned model serves: %s", name, exc)
                continue
            if release is not None:
                await self._retire(name, self._processor.swap_task(name, release))
            watched = self.agent.state.task(name).watched()
            if watched is not None:  # committed before the restart: a full window again
                self._begin_watch(name, watched)
        return notes

    async def install(self, archive: Path, manifest: bytes) -> ShadowVerdict:
        """Verify, stage, validate, switch, shadow, then commit or roll back."""
        candidate = await self.agent.install(archive, manifest)
        return await self.activate(candidate)

    async def activate(self, candidate: Candidate) -> ShadowVerdict:
        name = candidate.manifest.task
        if name not in self._tasks:
            close_task(candidate.task)
            raise NothingToRollBack(f"task {name} is not running on this appliance")
        async with self._activation:
            self._stop_watch(name)  # the release watched so far becomes the fallback
            await self.agent.switch(candidate)  # durable first: a crash now rolls back
            old = self._processor.swap_task(name, candidate.task)
            window = ShadowWindow(self._settings, sla_ms(self._inference, name), time.monotonic())
            run = ShadowRun(
                name,
                old,
                window,
                self._processor.run_on_frame,
                behind=lambda: self._backlog() > self._settings.shadow_max_backlog,
                nice=self._settings.shadow_nice,
            )
            self._shadows[name] = run
            self._processor.add_result_tap(run.tap)
            try:
                verdict = await run.verdict()
            finally:
                self._processor.remove_result_tap(run.tap)
                self._shadows.pop(name, None)
                await run.close()
            self.last_verdicts[name] = {
                "commit": verdict.commit,
                "reason": verdict.reason,
                **verdict.evidence,
            }
            actor, reason = self._abort.pop(name, (AGENT, verdict.reason))
            if verdict.commit:
                watch = self._settings.health_watch_s > 0
                await self.agent.commit(name, {"shadow": verdict.evidence}, watch=watch)
                watched = self.agent.state.task(name).watched()
                if watched is not None:
                    self._begin_watch(name, watched)
                await self._retire(name, old)
            else:
                self._processor.swap_task(name, old)
                await self.agent.rollback(name, reason, actor=actor)
                await self._retire(name, candidate.task)
            return verdict

    async def rollback(
        self, name: str, reason: str, *, actor: str = "technician", check: str | None = None
    ) -> dict[str, Any]:
        """Roll ``name`` back one release (ending a shadow window or health watch)."""
        self._stop_watch(name)
        run = self._shadows.get(name)
        if run is not None and not run.done.done():
            self._abort[name] = (actor, reason)
            run.done.set_result(ShadowVerdict(False, reason, run.window.evidence()))
            async with self._activation:  # activate() swaps back and records it
                pass
            return self._report_of(name)
        if name not in self._tasks or self.agent.serving(name)[0] is None:
            raise NothingToRollBack(f"{name}: the pinned model serves; nothing to roll back")
        slot, _ = await self.agent.rollback(name, reason, actor=actor, check=check)
        if slot is None:
            task = await asyncio.to_thread(self._load_pinned, name)
        else:
            loaded = await self.agent.load_serving(name)
            task = (
                loaded if loaded is not None else await asyncio.to_thread(self._load_pinned, name)
            )
        await self._retire(name, self._processor.swap_task(name, task))
        return self._report_of(name)

    async def _retire(self, name: str, task: InferenceTask) -> None:
        """Close ``task``, just swapped out of the pipeline, once the frames it was given
        are done: a frame still in its worker must not lose its model under it."""
        await self._processor.runs_ended(name)
        await asyncio.to_thread(close_task, task)

    # ------------------------------------------------------------------ health watch

    def _begin_watch(self, name: str, release: str) -> None:
        window = HealthWindow(self._settings, sla_ms(self._inference, name), time.monotonic())
        watch = HealthWatch(name, release, window)
        self._watches[name] = watch
        self._processor.add_result_tap(watch.tap)
        task = asyncio.create_task(self._run_watch(watch), name=f"health-watch-{name}")
        self._watch_tasks.add(task)
        task.add_done_callback(self._watch_tasks.discard)

    def _stop_watch(self, name: str) -> None:
        """End ``name``'s watch without a verdict (replaced, rolled back, shutting down)."""
        watch = self._watches.pop(name, None)
        if watch is None:
            return
        self._processor.remove_result_tap(watch.tap)
        if not watch.regressed.done():
            watch.regressed.cancel()

    async def _run_watch(self, watch: HealthWatch) -> None:
        name = watch.task_name
        await asyncio.wait({watch.regressed}, timeout=self._settings.health_watch_s)
        if watch.regressed.cancelled() or self._watches.get(name) is not watch:
            return  # ended by someone else
        evidence = watch.window.evidence(time.monotonic())
        reason = watch.regressed.result() if watch.regressed.done() else None
        self._stop_watch(name)  # settles ``regressed`` (cancelled) when it ended healthy
        if reason is None:
            await self.agent.end_watch(name, watch.release, {"health": evidence})
            return
        async with self._activation:  # not while another release is being switched in
            info = self.agent.state.task(name).active_info()
            if info is None or info.release_key() != watch.release:
                return
            self.last_verdicts[name] = {"commit": False, "reason": reason, "health": evidence}
            try:
                await self.rollback(name, reason, actor=AGENT, check=HEALTH_REGRESSION)
            except ApplianceError as exc:  # the previous slot would not load: logged, kept
                _log.error("health regression of %s not rolled back: %s", name, exc)

    def _report_of(self, name: str) -> dict[str, Any]:
        report: dict[str, Any] = self.report()[name]
        return report

    async def apply(self, assignment: ModelAssignment, fetcher: Fetcher) -> str:
        """Act on one assignment from the cloud's handshake; returns what was done."""
        if assignment.action == "rollback":
            for name in list(self._tasks):
                _, info = self.agent.serving(name)
                if info is not None and (info.name, info.counter) == (
                    assignment.name,
                    assignment.counter,
                ):
                    await self.rollback(name, "the cloud aborted the rollout", actor="cloud")
                    return f"rolled back {name}"
            return "not running it"
        for name in self._tasks:
            _, info = self.agent.serving(name)
            if info is not None and (info.name, info.version) == (
                assignment.name,
                assignment.version,
            ):
                return "already serving"
        manifest = await fetch_manifest(fetcher, assignment.manifest_url)
        verified = await self.agent.precheck(manifest)  # nothing is downloaded for a refusal
        release = verified.manifest
        archive = self.agent.store.downloads / f"{release.name}-{release.counter}.tar"
        await download_artifact(
            fetcher,
            f"/v1/models/{release.name}/{release.version}/artifact",
            archive,
            release.artifact.digest(),
        )
        try:
            verdict = await self.install(archive, manifest)
        finally:
            await asyncio.to_thread(archive.unlink, missing_ok=True)
        return "committed" if verdict.commit else f"rolled back: {verdict.reason}"

    def inventory(self) -> list[ModelInfo]:
        """What each task runs, for the handshake's ``models`` (with the last outcome)."""
        models = []
        for name, task in self._tasks.items():
            slots = self.agent.state.task(name)
            info = slots.active_info()
            models.append(
                ModelInfo(
                    name=task.model_name,
                    version=task.model_version,
                    task=name,
                    release=None if info is None else info.name,
                    counter=None if info is None else info.counter,
                    outcome=slots.last_outcome,
                )
            )
        return models

    def report(self) -> dict[str, Any]:
        """Per running task: what serves, both slots, and a shadow window in progress."""
        out: dict[str, Any] = {}
        now = time.monotonic()
        for name, task in self._tasks.items():
            slots = self.agent.state.task(name)
            run, watch = self._shadows.get(name), self._watches.get(name)
            out[name] = {
                "serving": slots.active or "pinned",
                "model_version": task.model_version,
                "on_trial": slots.on_trial(),
                "previous": slots.previous or ("pinned" if slots.active else None),
                "slots": {s: i.model_dump(mode="json") for s, i in slots.slots.items()},
                "shadow": None if run is None else run.window.evidence(),
                "health": None if watch is None else watch.window.evidence(now),
                "last_verdict": self.last_verdicts.get(name),
            }
        return out

    async def close(self) -> None:
        """End shadow windows without a verdict: the release stays on trial, and the next
        start rolls it back (it was never committed)."""
        for run in list(self._shadows.values()):
            if not run.done.done():
                run.done.cancel()
        for name in list(self._watches):  # still marked: the next start watches again
            self._stop_watch(name)
        await asyncio.gather(*self._watch_tasks, return_exceptions=True)
