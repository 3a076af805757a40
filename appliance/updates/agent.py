"""The OTA agent: verify, stage, validate, switch, commit or roll back one release.

Blocking work (hashing, extraction, model loading, golden runs) runs in worker
threads; every step's state is durable before its effect, so a power cut at
any point leaves a slot that loads and a ``state.json`` that says which
(``slot_state.py``).  Every refusal, failure and change is audited into the
outbox ``critical`` class through ``AuditSink`` (``appliance.audit.AuditTrail``).

``on_step`` is told each step as it completes (``verified``, ``stage`` once the
first file is written (from a worker thread), ``staged``, ``validated``,
``switch``, ``commit``, ``rollback``): progress for the status page, and the
hook the crash tests kill the process at.  Switch, commit and rollback are
audited before their state is saved: after a crash between the two, the
restart's ``model.recovered`` record says what really happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from appliance.errors import ApplianceError
from appliance.inference.results import InferenceTask
from appliance.inference.settings import InferenceSettings
from appliance.updates.contents import ReleaseContents, load_contents
from appliance.updates.errors import ReleaseError, ReleaseValidationFailed
from appliance.updates.release_tasks import (
    GoldenReport,
    close_task,
    files_in_use,
    load_release_task,
    sla_ms,
    validate_golden,
)
from appliance.updates.settings import UpdateSettings
from appliance.updates.slot_state import SlotInfo, SlotName, SlotStatus, TaskSlots, UpdateState
from appliance.updates.slot_store import SlotStore
from sync.protocol import ModelOutcome
from sync.protocol.releases import ReleaseManifest, VerifiedRelease, verify_manifest
from sync.shared.signing import (
    Envelope,
    Keyring,
    TimeFloor,
    VerificationError,
    extract_archive,
    verify_file,
)

__all__ = ["AGENT", "AuditSink", "Candidate", "UpdateAgent"]

AGENT = "ota-agent"  # the actor of audit records the agent writes on its own


class AuditSink(Protocol):
    async def record(self, action: str, detail: Mapping[str, Any] | None = None) -> int: ...


@dataclass
class Candidate:
    """A release staged and validated in ``slot``, loaded and ready to switch to."""

    manifest: ReleaseManifest
    slot: SlotName
    task: InferenceTask
    report: GoldenReport


class UpdateAgent:
    def __init__(
        self,
        store: SlotStore,
        keyring: Keyring,
        *,
        settings: UpdateSettings,
        inference: InferenceSettings,
        audit: AuditSink,
        on_step: Callable[[str], None] = lambda step: None,
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.settings = settings
        self.inference = inference
        self._audit = audit
        self._on_step = on_step
        self._lock = asyncio.Lock()
        self.state = UpdateState()

    # ------------------------------------------------------------------ start

    async def start(self) -> list[str]:
        """Load the state and put it right after a restart: half-staged slots emptied, an
        uncommitted trial rolled back, a damaged active slot replaced by its fallback."""
        async with self._lock:
            self.keyring = await asyncio.to_thread(self.store.trusted_keyring, self.keyring)
            state = await asyncio.to_thread(self.store.load_state)
            notes: list[str] = []
            for task, slots in state.tasks.items():
                slots, recovered = slots.recover()
                notes += [f"{task}: {n}" for n in recovered]
                while slots.active is not None:
                    problem = await asyncio.to_thread(self.store.usable, task, slots.active)
                    if problem is None:
                        break
                    notes.append(f"{task}: slot {slots.active} damaged ({problem}), fell back")
                    slots = slots.unusable_active(f"damaged on disk: {problem}")
                for slot, info in slots.slots.items():
                    if info.status is SlotStatus.EMPTY:
                        await asyncio.to_thread(self.store.wipe, task, slot)
                state = state.with_task(task, slots)
            await asyncio.to_thread(self.store.save_state, state)
            self.state = state
        for note in notes:
            await self._audit.record("model.recovered", {"actor": AGENT, "note": note})
        return notes

    async def rotate_keyring(self, envelope_bytes: bytes, *, actor: str) -> Keyring:
        """Trust a new keyring: signed by a key trusted now and one of the new ring, a
        higher version, every revocation kept (``Keyring.rotated``); kept durably."""
        async with self._lock:
            try:
                new = self.keyring.rotated(Envelope.parse(envelope_bytes))
            except VerificationError as exc:
                await self._audit.record(
                    "model.keyring_refused",
                    {"actor": actor, "check": exc.check, "reason": str(exc)},
                )
                raise
            await asyncio.to_thread(self.store.save_keyring, envelope_bytes)
            self.keyring = new
        await self._audit.record(
            "model.keyring_rotated",
            {
                "actor": actor,
                "version": new.version,
                "keys": sorted(new.keys),
                "revoked": sorted(new.revoked),
            },
        )
        return new

    def serving(self, task: str) -> tuple[SlotName | None, SlotInfo | None]:
        """The slot whose release serves ``task`` (None: the pinned models)."""
        slots = self.state.task(task)
        return slots.active, slots.active_info()

    async def load_serving(self, task: str) -> InferenceTask | None:
        """Load the serving release of ``task``; None when the pinned models serve."""
        slot, _ = self.serving(task)
        if slot is None:
            return None
        directory = self.store.slot_dir(task, slot)
        contents = await asyncio.to_thread(load_contents, directory)
        return await asyncio.to_thread(load_release_task, contents, directory, self.inference)

    # ------------------------------------------------------------------ install

    async def install(self, archive: Path, manifest_bytes: bytes) -> Candidate:
        """Verify ``archive`` against ``manifest_bytes``, stage it into the inactive slot
        and validate it with the real runtime.  Refusals are audited and re-raised."""
        async with self._lock:
            verified, floor = await self._verified(manifest_bytes)
            try:
                return await self._install(archive, manifest_bytes, verified, floor)
            except VerificationError as exc:
                await self._refused(manifest_bytes, exc.check, str(exc))
                raise

    async def precheck(self, manifest_bytes: bytes) -> VerifiedRelease:
        """Every manifest check, before anything is downloaded (refusals audited)."""
        async with self._lock:
            return (await self._verified(manifest_bytes))[0]

    async def _verified(self, manifest_bytes: bytes) -> tuple[VerifiedRelease, TimeFloor]:
        try:
            claimed = Envelope.parse(manifest_bytes).signed  # only to find the active counter
            slots = self.state.task(str(claimed.get("task")))
            floor = await asyncio.to_thread(self.store.load_floor, self.keyring.issued_at)
            verified = verify_manifest(
                manifest_bytes,
                self.keyring,
                floor,
                device_class=self.settings.device_class,
                active_counter=slots.active_counter(str(claimed.get("name"))),
            )
        except VerificationError as exc:
            await self._refused(manifest_bytes, exc.check, str(exc))
            raise
        manifest = verified.manifest
        if f"{manifest.name}@{manifest.counter}" in slots.rejected:
            reason = f"{manifest.name} {manifest.version} failed on this device before"
            await self._refused(manifest_bytes, "failed_before", reason)
            raise ReleaseError(reason)
        return verified, floor

    async def _refused(self, manifest_bytes: bytes, check: str, reason: str) -> None:
        """Audit a refusal; report it for the task the manifest claims, when it is one of
        this appliance's (the claim is unverified: it only labels the report)."""
        await self._audit.record(
            "model.refused", {"actor": AGENT, "check": check, "reason": reason}
        )
        try:
            claimed = Envelope.parse(manifest_bytes).signed
            outcome = ModelOutcome(
                name=str(claimed.get("name"))[:128],
                version=str(claimed.get("version"))[:64],
                counter=max(0, int(claimed.get("counter", 0))),
                result="refused",
                check=check[:64],
                reason=reason[:500],
            )
        except (VerificationError, ValueError, TypeError):
            return
        task = str(claimed.get("task"))
        if task in self.state.tasks or task in type(self.inference).model_fields:
            await self._save(task, self.state.task(task).with_outcome(outcome))

    async def _install(
        self,
        archive: Path,
        manifest_bytes: bytes,
        verified: VerifiedRelease,
        floor: TimeFloor,
    ) -> Candidate:
        manifest = verified.manifest
        slots = self.state.task(manifest.task)
        sla_ms(self.inference, manifest.task)  # a task this appliance runs
        await asyncio.to_thread(verify_file, archive, manifest.artifact.digest())
        await asyncio.to_thread(self.store.save_floor, verified.advanced_floor(floor))
        self._on_step("verified")

        slots, slot = slots.begin_staging(
            name=manifest.name,
            version=manifest.version,
            counter=manifest.counter,
            keyid=verified.keyid,
        )
        await self._save(manifest.task, slots)
        directory = await asyncio.to_thread(self.store.wipe, manifest.task, slot)
        written: list[str] = []

        def progress(path: str) -> None:  # worker thread: "stage" once a file is on disk
            written.append(path)
            if len(written) == 1:
                self._on_step("stage")

        try:
            await asyncio.to_thread(
                extract_archive, archive, directory, manifest.file_digests(), on_file=progress
            )
        except VerificationError:
            await self._save(manifest.task, slots.fail(slot, "unsafe or altered archive"))
            raise
        await asyncio.to_thread(self.store.seal, manifest.task, slot, manifest_bytes)
        await self._save(manifest.task, slots.mark(slot, SlotStatus.STAGED))
        self._on_step("staged")
        return await self._validate(manifest, slot, directory)

    async def _validate(
        self, manifest: ReleaseManifest, slot: SlotName, directory: Path
    ) -> Candidate:
        task_name = manifest.task
        loaded: InferenceTask | None = None
        try:
            contents = await asyncio.to_thread(load_contents, directory)
            _check_contents(contents, manifest)
            loaded = await asyncio.to_thread(load_release_task, contents, directory, self.inference)
            report = await asyncio.to_thread(
                validate_golden,
                loaded,
                contents,
                directory,
                sla_ms(self.inference, task_name),
                latency_runs=self.settings.golden_latency_runs,
            )
        except ApplianceError as exc:  # ReleaseError, ModelLoadError, ...
            if loaded is not None:
                close_task(loaded)
            check = exc.check if isinstance(exc, ReleaseValidationFailed) else "load"
            failed = self.state.task(task_name).fail(slot, str(exc))
            outcome = _outcome(manifest, "validation_failed", check=check, reason=str(exc))
            await self._save(task_name, failed.with_outcome(outcome))
            await self._audit.record(
                "model.validation_failed",
                {"actor": AGENT, **_release(manifest), "check": check, "reason": str(exc)},
            )
            raise
        await self._save(task_name, self.state.task(task_name).mark(slot, SlotStatus.VALIDATED))
        self._on_step("validated")
        await self._audit.record(
            "model.staged",
            {
                "actor": AGENT,
                **_release(manifest),
                "slot": slot,
                "golden_cases": report.cases,
                "worst_median_ms": round(report.worst_median_ms, 1),
                "budget_ms": report.budget_ms,
                "runs": files_in_use(loaded, directory),  # what serves once switched
            },
        )
        return Candidate(manifest=manifest, slot=slot, task=loaded, report=report)

    # ------------------------------------------------------------------ switch, commit, rollback

    async def switch(self, candidate: Candidate) -> None:
        """Make the candidate the serving release, on trial (durable before the caller
        swaps the task in the pipeline)."""
        async with self._lock:
            task = candidate.manifest.task
            switched = self.state.task(task).switch(candidate.slot)
            switched = switched.with_outcome(_outcome(candidate.manifest, "activated"))
            await self._audit.record(
                "model.switched",
                {"actor": AGENT, **_release(candidate.manifest), "slot": candidate.slot},
            )
            await self._save(task, switched)
            self._on_step("switch")

    async def commit(
        self, task: str, evidence: Mapping[str, Any] | None = None, *, watch: bool = False
    ) -> None:
        """Commit the release on trial (``watch``: its health watch starts, durably)."""
        async with self._lock:
            slots = self.state.task(task)
            committed = slots.commit(watch=watch)
            info = slots.active_info()
            if info is not None:
                committed = committed.with_outcome(_slot_outcome(info, "committed"))
            await self._audit.record(
                "model.committed",
                {"actor": AGENT, "task": task, **_info(slots.active_info()), **(evidence or {})},
            )
            await self._save(task, committed)
            self._on_step("commit")

    async def end_watch(self, task: str, release: str, evidence: Mapping[str, Any]) -> None:
        """The health watch of ``release`` ended with no regression."""
        async with self._lock:
            slots = self.state.task(task)
            if slots.watching != release:
                return  # rolled back or replaced meanwhile
            await self._audit.record(
                "model.health_passed",
                {"actor": AGENT, "task": task, **_info(slots.active_info()), **evidence},
            )
            await self._save(task, slots.end_watch())

    async def rollback(
        self, task: str, reason: str, *, actor: str = AGENT, check: str | None = None
    ) -> tuple[SlotName | None, SlotInfo | None]:
        """Back to the previous release (or the pinned models); returns what serves now.
        ``check`` labels the reported outcome (``health_regression``)."""
        async with self._lock:
            slots = self.state.task(task)
            if slots.active is None:
                raise ReleaseError(f"{task}: the pinned models serve; nothing to roll back")
            left = slots.active_info()
            slots = slots.rollback(reason)
            if left is not None:
                outcome = _slot_outcome(left, "rolled_back", reason=reason, check=check)
                slots = slots.with_outcome(outcome)
            await self._audit.record(
                "model.rolled_back",
                {
                    "actor": actor,
                    "task": task,
                    **_info(left),
                    "reason": reason,
                    **({"check": check} if check else {}),
                    "now_serving": _info(slots.active_info()) or "pinned",
                },
            )
            await self._save(task, slots)
            self._on_step("rollback")
        return slots.active, slots.active_info()

    async def _save(self, task: str, slots: TaskSlots) -> None:
        state = self.state.with_task(task, slots)
        await asyncio.to_thread(self.store.save_state, state)
        self.state = state


def _check_contents(contents: ReleaseContents, manifest: ReleaseManifest) -> None:
    signed = (manifest.name, manifest.version, manifest.task, manifest.runtime)
    inside = (contents.name, contents.version, contents.task, contents.runtime)
    if signed != inside:
        raise ReleaseError(f"release.json says {inside}, the signed manifest {signed}")


def _outcome(
    manifest: ReleaseManifest, result: Any, *, check: str | None = None, reason: str | None = None
) -> ModelOutcome:
    return ModelOutcome(
        name=manifest.name,
        version=manifest.version,
        counter=manifest.counter,
        result=result,
        check=check,
        reason=None if reason is None else reason[:500],
    )


def _slot_outcome(
    info: SlotInfo, result: Any, *, reason: str | None = None, check: str | None = None
) -> ModelOutcome:
    return ModelOutcome(
        name=info.name or "?",
        version=info.version or "?",
        counter=info.counter or 0,
        result=result,
        check=check,
        reason=None if reason is None else reason[:500],
    )


def _release(manifest: ReleaseManifest) -> dict[str, Any]:
    return {
        "task": manifest.task,
        "name": manifest.name,
        "version": manifest.version,
        "counter": manifest.counter,
    }


def _info(info: SlotInfo | None) -> dict[str, Any]:
    if info is None:
        return {}
    return {"name": info.name, "version": info.version, "counter": info.counter}
