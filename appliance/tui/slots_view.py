"""The models screen's view of ``GET /v1/models``: per task, both A/B slots, what
serves, the shadow window or health watch in progress and the last verdict.

Pure: any JSON value is accepted (a field of the wrong type reads as unknown),
so an appliance of another version never ends the TUI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["SlotRow", "TaskModels", "read_slots", "task_detail"]


@dataclass(frozen=True, slots=True)
class SlotRow:
    """One slot of one task, as the table shows it."""

    task: str
    slot: str  # a / b
    release: str | None  # release name
    version: str | None
    counter: int | None
    status: str  # empty, staging, staged, validated, trial, active, fallback, failed
    serving: bool  # the pipeline runs this slot
    reason: str | None  # why it FAILED


@dataclass(frozen=True, slots=True)
class TaskModels:
    task: str
    serving: str  # a / b / pinned
    version: str | None  # the model version the pipeline runs
    on_trial: bool
    previous: str | None  # where a rollback goes: a / b / pinned (None: nowhere)
    slots: tuple[SlotRow, ...]
    shadow: dict[str, Any] | None  # evidence of a shadow window in progress
    health: dict[str, Any] | None  # evidence of a health watch in progress
    last_verdict: dict[str, Any] | None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_slots(raw: object) -> tuple[TaskModels, ...]:
    """The tasks of a ``GET /v1/models`` body, sorted by name."""
    tasks = []
    for task, entry in sorted(_dict(raw).items()):
        entry = _dict(entry)
        serving = _str(entry.get("serving")) or "?"
        rows = tuple(
            SlotRow(
                task=str(task),
                slot=str(slot),
                release=_str(info.get("name")),
                version=_str(info.get("version")),
                counter=_int(info.get("counter")),
                status=_str(info.get("status")) or "?",
                serving=slot == serving,
                reason=_str(info.get("reason")),
            )
            for slot, info in sorted(_dict(entry.get("slots")).items())
            if isinstance(info, dict)
        )
        shadow, health = entry.get("shadow"), entry.get("health")
        verdict = entry.get("last_verdict")
        tasks.append(
            TaskModels(
                task=str(task),
                serving=serving,
                version=_str(entry.get("model_version")),
                on_trial=entry.get("on_trial") is True,
                previous=_str(entry.get("previous")),
                slots=rows,
                shadow=shadow if isinstance(shadow, dict) else None,
                health=health if isinstance(health, dict) else None,
                last_verdict=verdict if isinstance(verdict, dict) else None,
            )
        )
    return tuple(tasks)


def _figure(evidence: dict[str, Any], key: str) -> str:
    value = evidence.get(key)
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else "?"


def task_detail(task: TaskModels) -> list[str]:
    """A few lines under the table: what serves, where a rollback goes, and the check
    in progress (shadow window or health watch) or the last verdict."""
    lines = [
        f"{task.task}: serving {task.serving} ({task.version or '?'})"
        f"{' ON TRIAL' if task.on_trial else ''};"
        f" a rollback goes to {task.previous or 'nothing (pinned models serve)'}"
    ]
    if task.shadow is not None:
        s = task.shadow
        lines.append(
            f"  shadow window: {_figure(s, 'frames')} frames compared"
            f" ({_figure(s, 'skipped')} skipped), p99 {_figure(s, 'p99_ms')} ms"
            f" vs old {_figure(s, 'old_p99_ms')} ms, agreement {_figure(s, 'agreement')}"
        )
    if task.health is not None:
        h = task.health
        lines.append(
            f"  health watch: {_figure(h, 'frames')} frames, {_figure(h, 'errors')} errors,"
            f" {_figure(h, 'blocks_healthy')} healthy blocks of {_figure(h, 'block_size')},"
            f" {_figure(h, 'remaining_s')} s left"
        )
    verdict = task.last_verdict
    if verdict is not None:
        commit = verdict.get("commit")
        outcome = "committed" if commit is True else "ROLLED BACK" if commit is False else "?"
        reason = _str(verdict.get("reason")) or "no reason given"
        lines.append(f"  last verdict: {outcome}: {reason[:200]}")
    return lines
