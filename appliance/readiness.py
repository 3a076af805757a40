"""Is the appliance ready to serve: required models loaded and the outbox open.

``Readiness`` is what ``GET /healthz`` answers from, what ``run_daemon``'s ready
line says, and the hook for a service manager (systemd's ``READY=1``): await
``wait_ready()`` or register ``on_change(callback)``.  ``readiness_problem`` is
the pure decision.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Readiness", "ReadinessState", "readiness_problem"]

STARTING = "starting"
STOPPING = "stopping"


@dataclass(frozen=True, slots=True)
class ReadinessState:
    ready: bool
    reason: str | None  # why not, for people (None when ready)


def readiness_problem(
    failed_tasks: Mapping[str, str],
    model_paths: Mapping[str, Sequence[Path]],
    *,
    outbox_open: bool,
) -> str | None:
    """Why the appliance is not ready, or None.  Every enabled task is required: one
    that failed to load makes the appliance not ready, with the missing model file
    named when that is why (``model gate_ocr missing: /abs/path``)."""
    problems = []
    if not outbox_open:
        problems.append("outbox not open")
    for name, why in sorted(failed_tasks.items()):
        missing = [path for path in model_paths.get(name, ()) if not path.is_file()]
        if missing:
            problems.append(f"model {name} missing: {', '.join(map(str, missing))}")
        else:
            problems.append(f"task {name} not loaded: {why}")
    return "; ".join(problems) or None


class Readiness:
    """The appliance's readiness, as an asyncio Event plus the reason it is not set."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._reason: str | None = STARTING
        self._listeners: list[Callable[[ReadinessState], None]] = []

    @property
    def ready(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> str | None:
        return self._reason

    def state(self) -> ReadinessState:
        return ReadinessState(self.ready, self._reason)

    def on_change(self, listener: Callable[[ReadinessState], None]) -> None:
        """Call ``listener(state)`` whenever readiness or its reason changes."""
        self._listeners.append(listener)

    async def wait_ready(self) -> None:
        await self._event.wait()

    def set(self, problem: str | None) -> None:
        """Ready when ``problem`` is None, else not ready for that reason."""
        before = self.state()
        if problem is None:
            self._event.set()
        else:
            self._event.clear()
        self._reason = problem
        after = self.state()
        if after != before:
            for listener in self._listeners:
                listener(after)

    def stopping(self) -> None:
        self.set(STOPPING)
