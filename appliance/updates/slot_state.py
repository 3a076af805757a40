"""A/B model slots per task: the durable state and its transitions (pure, no I/O).

Each task has two slots, ``a`` and ``b``, plus the pinned models of
``models_dir`` ("factory", ``active = None``), which always load.  A new
release goes into the slot that is not active::

    EMPTY -> STAGING -> STAGED -> VALIDATED -> TRIAL (switched, shadow window)
                                             -> ACTIVE (committed)
    any step -> FAILED (refused, invalid, shadow regression, rolled back)

The state is written (fsynced) before each step's effect, so after a power cut
``recover`` knows what is half done: a slot being staged or validated is
emptied; a release still on TRIAL is rolled back (it was never committed).
The previous slot stays as the rollback target (one step back), then factory.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sync.protocol import ModelOutcome

__all__ = [
    "SLOTS",
    "SlotInfo",
    "SlotName",
    "SlotStatus",
    "TaskSlots",
    "UpdateState",
]

SlotName = Literal["a", "b"]
SLOTS: tuple[SlotName, SlotName] = ("a", "b")
_REJECTED_KEPT = 50  # releases refused on this device, newest last (not retried)


class SlotStatus(StrEnum):
    EMPTY = "empty"
    STAGING = "staging"  # files being written; never loaded
    STAGED = "staged"  # files written and checked; not yet validated
    VALIDATED = "validated"  # golden outputs and latency passed
    TRIAL = "trial"  # serving frames in the shadow window, not committed
    ACTIVE = "active"  # committed
    FALLBACK = "fallback"  # the previous active release: where a rollback goes
    FAILED = "failed"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlotInfo(_Strict):
    status: SlotStatus = SlotStatus.EMPTY
    name: str | None = None  # release name, version and counter of what is in the slot
    version: str | None = None
    counter: int | None = None
    keyid: str | None = None  # the key that signed it
    reason: str | None = None  # why FAILED

    def release_key(self) -> str:
        return f"{self.name}@{self.counter}"


class TaskSlots(_Strict):
    active: SlotName | None = None  # None: the pinned models of models_dir
    previous: SlotName | None = None  # rollback target; None: the pinned models
    slots: dict[SlotName, SlotInfo] = Field(
        default_factory=lambda: {slot: SlotInfo() for slot in SLOTS}
    )
    rejected: list[str] = Field(default_factory=list)  # "name@counter", never retried
    last_outcome: ModelOutcome | None = None  # reported to the cloud in each handshake
    watching: str | None = None  # "name@counter" of a committed release under health watch

    def with_outcome(self, outcome: ModelOutcome) -> TaskSlots:
        return self.model_copy(update={"last_outcome": outcome})

    # ------------------------------------------------------------------ queries

    def active_info(self) -> SlotInfo | None:
        return self.slots[self.active] if self.active else None

    def active_counter(self, name: str) -> int | None:
        """The counter a new release of ``name`` must exceed (None: nothing of it active)."""
        info = self.active_info()
        return info.counter if info is not None and info.name == name else None

    def target(self) -> SlotName:
        """The slot a new release is staged into: never the active one."""
        if self.active is None:
            return "b" if self.previous == "a" else "a"
        return "b" if self.active == "a" else "a"

    def on_trial(self) -> bool:
        info = self.active_info()
        return info is not None and info.status is SlotStatus.TRIAL

    # ------------------------------------------------------------------ transitions

    def _with(self, slot: SlotName, info: SlotInfo, **fields: object) -> TaskSlots:
        slots = dict(self.slots)
        slots[slot] = info
        return self.model_copy(update={"slots": slots, **fields})

    def begin_staging(
        self, *, name: str, version: str, counter: int, keyid: str
    ) -> tuple[TaskSlots, SlotName]:
        slot = self.target()
        info = SlotInfo(
            status=SlotStatus.STAGING, name=name, version=version, counter=counter, keyid=keyid
        )
        previous = None if self.previous == slot else self.previous  # its fallback is gone
        return self._with(slot, info, previous=previous), slot

    def mark(self, slot: SlotName, status: SlotStatus) -> TaskSlots:
        expected = {
            SlotStatus.STAGED: SlotStatus.STAGING,
            SlotStatus.VALIDATED: SlotStatus.STAGED,
        }
        current = self.slots[slot].status
        if expected.get(status) is not current:
            raise ValueError(f"slot {slot} is {current}, cannot become {status}")
        return self._with(slot, self.slots[slot].model_copy(update={"status": status}))

    def fail(self, slot: SlotName, reason: str) -> TaskSlots:
        info = self.slots[slot].model_copy(update={"status": SlotStatus.FAILED, "reason": reason})
        rejected = [*self.rejected, info.release_key()][-_REJECTED_KEPT:]
        return self._with(slot, info, rejected=rejected)

    def switch(self, slot: SlotName) -> TaskSlots:
        """Serve ``slot`` on trial; the active release becomes the fallback."""
        if self.slots[slot].status is not SlotStatus.VALIDATED:
            raise ValueError(f"slot {slot} is {self.slots[slot].status}, not validated")
        state = self
        if self.active is not None:
            old = self.slots[self.active].model_copy(update={"status": SlotStatus.FALLBACK})
            state = state._with(self.active, old)
        trial = self.slots[slot].model_copy(update={"status": SlotStatus.TRIAL})
        return state._with(slot, trial, active=slot, previous=self.active, watching=None)

    def commit(self, *, watch: bool = False) -> TaskSlots:
        """The release on trial becomes ACTIVE (``watch``: its health watch begins)."""
        if not self.on_trial() or self.active is None:
            raise ValueError("no release on trial to commit")
        info = self.slots[self.active].model_copy(update={"status": SlotStatus.ACTIVE})
        return self._with(self.active, info, watching=info.release_key() if watch else None)

    def watched(self) -> str | None:
        """The serving release's key while its health watch runs."""
        info = self.active_info()
        if info is None or info.status is not SlotStatus.ACTIVE:
            return None
        return self.watching if self.watching == info.release_key() else None

    def end_watch(self) -> TaskSlots:
        return self.model_copy(update={"watching": None})

    def rollback(self, reason: str) -> TaskSlots:
        """Back to the previous release (or the pinned models); the current one FAILED."""
        if self.active is None:
            raise ValueError("the pinned models are active: nothing to roll back")
        state = self.fail(self.active, reason)
        target = self.previous
        if target is not None:
            info = state.slots[target].model_copy(update={"status": SlotStatus.ACTIVE})
            state = state._with(target, info)
        return state.model_copy(update={"active": target, "previous": None, "watching": None})

    def recover(self) -> tuple[TaskSlots, list[str]]:
        """After a restart: empty half-done slots, roll back an uncommitted trial."""
        state, notes = self, []
        for slot in SLOTS:
            info = state.slots[slot]
            if info.status in (SlotStatus.STAGING, SlotStatus.STAGED, SlotStatus.VALIDATED):
                notes.append(f"slot {slot}: {info.status} of {info.release_key()} discarded")
                state = state._with(slot, SlotInfo())
        if state.on_trial():
            notes.append(f"slot {state.active}: trial interrupted, rolled back")
            state = state.rollback("interrupted during the shadow window (restart)")
        return state, notes

    def unusable_active(self, reason: str) -> TaskSlots:
        """The active slot's files are damaged: fall back as a rollback would."""
        return self.rollback(reason)


class UpdateState(_Strict):
    """``state.json`` of the updates directory."""

    format: Literal[1] = 1
    tasks: dict[str, TaskSlots] = Field(default_factory=dict)

    def task(self, name: str) -> TaskSlots:
        return self.tasks.get(name) or TaskSlots()

    def with_task(self, name: str, slots: TaskSlots) -> UpdateState:
        return self.model_copy(update={"tasks": {**self.tasks, name: slots}})
