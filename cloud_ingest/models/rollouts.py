"""Rollouts at the edges: operator actions, device outcomes from the handshake, and
the assignments each device is given.  The decisions are the pure machine's
(``rollout.py``); this module loads, tallies, stores and reports them.

Every handshake records the outcomes the device reports, then advances every
running rollout (so a failure threshold crossed by one device's report aborts
the rollout in that very handshake, and the next handshake of every other
device carries the instruction to go back), then answers the device's
assignments:

- a running (not paused) or complete rollout that covers the device, which does
  not run that release or a higher counter (unless the release is a signed
  rollback) and has not reported on it yet: ``install``;
- an aborted rollout whose release the device runs: ``rollback``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge

from cloud_ingest.catalog import Catalog
from cloud_ingest.errors import Conflict, NotFound
from cloud_ingest.models.rollout import (
    FAILED_RESULTS,
    OperatorAction,
    Rollout,
    RolloutPhase,
    RolloutStateError,
    Tally,
)
from cloud_ingest.models.store import DeviceOutcome, ReleaseStore
from sync.protocol import ModelAssignment, ModelInfo
from sync.protocol.releases import ReleaseManifest

__all__ = ["RolloutService", "RolloutStatus", "manifest_url"]

# Refusals that say "not a target", not "a bad release": they do not count.
_NOT_A_FAILURE_CHECKS = frozenset({"device_class"})


def manifest_url(name: str, version: str) -> str:
    return f"/v1/models/{name}/{version}/manifest"


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    rollout: Rollout
    tally: Tally

    def to_json(self) -> dict[str, object]:
        r, t = self.rollout, self.tally
        return {
            "name": r.name,
            "version": r.version,
            "counter": r.counter,
            **r.summary(),
            "stage_since": r.stage_since,
            "plan": r.plan.model_dump(mode="json"),
            "eligible": t.eligible,
            "reporting": t.reporting,
            "committed": t.committed,
            "failed": t.failed,
            "failure_pct": round(t.failure_pct, 2),
        }


class _RolloutGauges:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["name", "version"]
        self.phase = Gauge(
            "yardlink_ingest_rollout_phase",
            "1 for the phase a model rollout is in (canary, staged, complete, aborted, paused)",
            [*labels, "phase"],
            registry=registry,
        )
        self.percent = Gauge(
            "yardlink_ingest_rollout_percent",
            "share of non-canary devices a rollout covers",
            labels,
            registry=registry,
        )
        self.devices = Gauge(
            "yardlink_ingest_rollout_devices",
            "devices of a rollout by outcome (eligible, reporting, committed, failed)",
            [*labels, "outcome"],
            registry=registry,
        )

    def show(self, status: RolloutStatus) -> None:
        r, t = status.rollout, status.tally
        for phase in (*RolloutPhase, "paused"):
            now = r.paused if phase == "paused" else r.phase is phase and not r.paused
            self.phase.labels(r.name, r.version, str(phase)).set(1 if now else 0)
        self.percent.labels(r.name, r.version).set(r.percent)
        for outcome, value in (
            ("eligible", t.eligible),
            ("reporting", t.reporting),
            ("committed", t.committed),
            ("failed", t.failed),
        ):
            self.devices.labels(r.name, r.version, outcome).set(value)


class RolloutService:
    def __init__(self, store: ReleaseStore, catalog: Catalog, registry: CollectorRegistry) -> None:
        self._store = store
        self._catalog = catalog
        self._gauges = _RolloutGauges(registry)
        self._lock = asyncio.Lock()  # one writer of rollout state at a time

    # ------------------------------------------------------------------ operator

    async def start(self, name: str, version: str, *, actor: str, now: float) -> RolloutStatus:
        release = await self._store.get_release(name, version)
        if release is None:
            raise NotFound(f"no published release {name} {version}")
        manifest = ReleaseManifest.model_validate(json.loads(release.manifest)["signed"])
        async with self._lock:
            rollout, transition = Rollout.start(
                name,
                version,
                release.counter,
                manifest.rollout,
                now,
                actor,
                rollback=manifest.rollback,
            )
            await self._store.save_rollout(rollout, transition, now, new=True)
            return await self._settle(rollout, now)

    async def act(
        self,
        name: str,
        version: str,
        action: OperatorAction,
        *,
        actor: str,
        now: float,
        reason: str = "",
    ) -> RolloutStatus:
        async with self._lock:
            rollout = await self._get(name, version)
            try:
                changed, transition = rollout.operator(action, now, actor, reason)
            except RolloutStateError as exc:
                raise Conflict(str(exc)) from exc
            await self._store.save_rollout(changed, transition, now)
            return await self._settle(changed, now)

    async def status(self, name: str, version: str, *, now: float) -> RolloutStatus:
        async with self._lock:
            return await self._settle(await self._get(name, version), now)

    async def statuses(self, *, now: float) -> list[RolloutStatus]:
        async with self._lock:
            return [await self._settle(r, now) for r in await self._store.list_rollouts()]

    # ------------------------------------------------------------------ devices

    async def handshake(
        self, device_id: str, site_id: str, models: list[ModelInfo], now: float
    ) -> list[ModelAssignment]:
        """Record what the device reports, advance the rollouts, answer its assignments."""
        listed = await self._store.list_rollouts()
        known = {(r.name, r.version): r.counter for r in listed}
        reports = [
            DeviceOutcome(
                device_id,
                o.name,
                o.version,
                o.counter,
                o.result,
                o.check,
                o.reason,
            )
            for o in (m.outcome for m in models)
            # only outcomes of releases being rolled out count (and are kept): any other
            # report, or one naming the wrong counter, is a device's own business
            if o is not None and known.get((o.name, o.version)) == o.counter
        ]
        if reports:
            await self._store.record_outcomes(reports, now)
        if all(r.terminal for r in listed):  # none to settle: no second read (most handshakes)
            rollouts = listed
        else:
            async with self._lock:  # settled from a fresh read: another may have moved them
                rollouts = [  # a complete or aborted rollout no longer changes: not tallied
                    r if r.terminal else (await self._settle(r, now)).rollout
                    for r in await self._store.list_rollouts()
                ]
        running = {m.release: m.counter for m in models if m.release is not None}
        if not rollouts:  # nothing to assign: the device's outcomes are not needed
            return []
        reported = await self._store.device_outcomes(device_id)
        return _assignments(rollouts, device_id, site_id, running, reported)

    # ------------------------------------------------------------------ inside

    async def _get(self, name: str, version: str) -> Rollout:
        rollout = await self._store.get_rollout(name, version)
        if rollout is None:
            raise NotFound(f"no rollout of {name} {version}")
        return rollout

    async def _settle(self, rollout: Rollout, now: float) -> RolloutStatus:
        """Advance a rollout with the current tally (caller holds the lock); store a change."""
        tally = await self._tally(rollout)
        advanced, transition = rollout.advance(tally, now)
        if transition is not None:
            await self._store.save_rollout(advanced, transition, now)
            tally = await self._tally(advanced)
        status = RolloutStatus(advanced, tally)
        self._gauges.show(status)
        return status

    async def _tally(self, rollout: Rollout) -> Tally:
        devices = [d for d in await self._catalog.list_devices() if not d.revoked]
        outcomes = [
            o
            for o in await self._store.outcomes_of(rollout.name, rollout.version)
            if o.check not in _NOT_A_FAILURE_CHECKS
        ]
        return Tally(
            eligible=sum(rollout.covers(d.device_id, d.site_id) for d in devices),
            reporting=len(outcomes),
            committed=sum(o.result == "committed" for o in outcomes),
            failed=sum(o.result in FAILED_RESULTS for o in outcomes),
        )


def _assignments(
    rollouts: list[Rollout],
    device_id: str,
    site_id: str,
    running: dict[str, int | None],
    reported: dict[tuple[str, str], DeviceOutcome],
) -> list[ModelAssignment]:
    answer: dict[str, ModelAssignment] = {}
    for rollout in sorted(rollouts, key=lambda r: r.counter, reverse=True):
        name, current = rollout.name, running.get(rollout.name)
        if rollout.phase is RolloutPhase.ABORTED:
            if current == rollout.counter:  # it took the release: go back
                answer[name] = _assignment(rollout, "rollback")
            continue
        if name in answer or rollout.paused or (rollout.name, rollout.version) in reported:
            continue
        if current == rollout.counter or (
            current is not None and current > rollout.counter and not rollout.rollback
        ):
            continue
        if rollout.covers(device_id, site_id):
            answer[name] = _assignment(rollout, "install")
    return list(answer.values())


def _assignment(rollout: Rollout, action: str) -> ModelAssignment:
    return ModelAssignment(
        name=rollout.name,
        version=rollout.version,
        manifest_url=manifest_url(rollout.name, rollout.version),
        counter=rollout.counter,
        action="rollback" if action == "rollback" else "install",
    )
