"""The rollout of one model release: a pure state machine (no I/O, no clock).

canary sites -> stages (% of devices) -> complete.  An operator may pause,
resume or abort; the machine aborts by itself when the failures among the
devices that reported exceed ``max_failure_pct`` once ``min_devices`` reported.
Each stage is held ``bake_s`` and moves on only when enough of its devices
committed.  The caller passes the time and the tally of device outcomes in, and
stores what comes out (with one audit event per transition).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal

from sync.protocol.releases import RolloutPlan

__all__ = [
    "FAILED_RESULTS",
    "OperatorAction",
    "Rollout",
    "RolloutPhase",
    "RolloutStateError",
    "Tally",
    "Transition",
    "device_bucket",
]

# Outcomes that count against a release (a device_class refusal does not: the
# device was simply not a target; see ``Tally``).
FAILED_RESULTS = frozenset({"refused", "validation_failed", "rolled_back"})

OperatorAction = Literal["pause", "resume", "abort"]


class RolloutPhase(StrEnum):
    CANARY = "canary"  # only devices at the plan's canary sites
    STAGED = "staged"  # canary sites plus stages[stage_index] % of the other devices
    COMPLETE = "complete"  # every device
    ABORTED = "aborted"  # no new installs; devices running it are told to go back


class RolloutStateError(ValueError):
    """An operator action that does not apply to the rollout's state (409)."""


@dataclass(frozen=True, slots=True)
class Tally:
    """Device outcomes of this release, among the devices eligible now."""

    eligible: int = 0  # devices the current phase covers
    reporting: int = 0  # devices that reported any outcome for this release
    committed: int = 0  # passed their shadow window
    failed: int = 0  # refused, failed validation or rolled back

    @property
    def failure_pct(self) -> float:
        return 100.0 * self.failed / self.reporting if self.reporting else 0.0


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of a rollout, for the audit log."""

    action: str  # rollout.start, rollout.stage, rollout.complete, rollout.pause, ...
    actor: str
    detail: dict[str, object]


@dataclass(frozen=True, slots=True)
class Rollout:
    name: str
    version: str
    counter: int
    plan: RolloutPlan
    phase: RolloutPhase
    stage_index: int  # index into plan.stages while STAGED, else -1
    stage_since: float  # when the current phase or stage was entered
    paused: bool = False
    reason: str = ""  # why it was aborted
    rollback: bool = False  # a signed rollback: offered also to devices above its counter

    @classmethod
    def start(
        cls,
        name: str,
        version: str,
        counter: int,
        plan: RolloutPlan,
        now: float,
        actor: str,
        *,
        rollback: bool = False,
    ) -> tuple[Rollout, Transition]:
        rollout = cls(name, version, counter, plan, RolloutPhase.CANARY, -1, now, rollback=rollback)
        if not plan.canary_sites:  # no canary group: the first stage is the canary
            rollout = replace(rollout, phase=RolloutPhase.STAGED, stage_index=0)
        return rollout, Transition("rollout.start", actor, rollout.summary())

    @property
    def terminal(self) -> bool:
        return self.phase in (RolloutPhase.COMPLETE, RolloutPhase.ABORTED)

    @property
    def percent(self) -> int:
        """Share of the non-canary devices the rollout covers now."""
        if self.phase is RolloutPhase.COMPLETE:
            return 100
        if self.phase is RolloutPhase.STAGED:
            return self.plan.stages[self.stage_index]
        return 0

    def summary(self) -> dict[str, object]:
        return {
            "phase": self.phase.value,
            "percent": self.percent,
            "paused": self.paused,
            **({"reason": self.reason} if self.reason else {}),
        }

    def covers(self, device_id: str, site_id: str) -> bool:
        """Whether a device may be offered the release in the current phase."""
        if self.phase is RolloutPhase.ABORTED:
            return False
        if site_id in self.plan.canary_sites or self.phase is RolloutPhase.COMPLETE:
            return True
        return device_bucket(self.name, device_id) < self.percent

    def operator(
        self, action: OperatorAction, now: float, actor: str, reason: str = ""
    ) -> tuple[Rollout, Transition]:
        if self.terminal:
            raise RolloutStateError(f"rollout of {self.name} {self.version} is {self.phase.value}")
        if action == "abort":
            why = reason or f"aborted by {actor}"
            return self._aborted(why, actor)
        if (action == "pause") == self.paused:
            state = "paused" if self.paused else "running"
            raise RolloutStateError(f"rollout of {self.name} {self.version} is already {state}")
        # resuming restarts the bake clock: the hold counts only time the rollout ran
        changed = replace(self, paused=action == "pause", stage_since=now)
        return changed, Transition(f"rollout.{action}", actor, changed.summary())

    def advance(self, tally: Tally, now: float) -> tuple[Rollout, Transition | None]:
        """The rollout after new outcomes or elapsed time: abort, next stage, or as is."""
        if self.terminal:
            return self, None
        plan = self.plan
        if tally.reporting >= plan.min_devices and tally.failure_pct > plan.max_failure_pct:
            return self._aborted(
                f"{tally.failed} of {tally.reporting} reporting devices failed"
                f" ({tally.failure_pct:.1f}% > {plan.max_failure_pct}%)",
                "rollout",
                tally,
            )
        if self.paused or now - self.stage_since < plan.bake_s:
            return self, None
        if tally.committed < min(plan.min_devices, tally.eligible):
            return self, None
        if self.phase is RolloutPhase.CANARY:
            nxt = replace(self, phase=RolloutPhase.STAGED, stage_index=0, stage_since=now)
        elif self.stage_index + 1 < len(plan.stages):
            nxt = replace(self, stage_index=self.stage_index + 1, stage_since=now)
        else:
            nxt = replace(self, phase=RolloutPhase.COMPLETE, stage_index=-1, stage_since=now)
        if nxt.phase is RolloutPhase.STAGED and nxt.percent == 100:
            nxt = replace(nxt, phase=RolloutPhase.COMPLETE, stage_index=-1)
        action = "rollout.complete" if nxt.phase is RolloutPhase.COMPLETE else "rollout.stage"
        return nxt, Transition(action, "rollout", {**nxt.summary(), **_tally(tally)})

    def _aborted(
        self, reason: str, actor: str, tally: Tally | None = None
    ) -> tuple[Rollout, Transition]:
        aborted = replace(
            self, phase=RolloutPhase.ABORTED, stage_index=-1, paused=False, reason=reason
        )
        detail = {**aborted.summary(), **(_tally(tally) if tally else {})}
        return aborted, Transition("rollout.abort", actor, detail)


def device_bucket(name: str, device_id: str) -> int:
    """A device's stable place in 0..99 for a model name: a stage of p % covers the
    buckets below p, so a device once covered stays covered as stages grow."""
    digest = hashlib.sha256(f"{name}\0{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def _tally(tally: Tally) -> dict[str, object]:
    return {
        "eligible": tally.eligible,
        "reporting": tally.reporting,
        "committed": tally.committed,
        "failed": tally.failed,
    }
