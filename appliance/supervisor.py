"""Long-running background tasks of the daemon, restarted when they fail, with a backoff.

A task that fails at once on every start must not spin: after each failure the
next start waits ``RestartBackoff.delay`` (1 s, 2 s, 4 s ... at most 60 s by
default); a run that lasted ``healthy_after_s`` before it failed starts the
series again from the first delay.  The first failure of a series is logged
with its traceback, the following ones as one line each (so at most one line
per ``max_s`` once the backoff is at its cap).  Each task's state (running,
backing off, finished), its restarts and its last error are in ``status()``,
which the daemon shows under ``supervised`` in ``GET /v1/status``.

The clock and the sleep are injected, so tests run without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from appliance.errors import error_summary
from sync.backoff import doubling_delay

__all__ = ["RestartBackoff", "Supervisor"]

_log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
TaskFactory = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RestartBackoff:
    """How long a failed task waits before its next start."""

    initial_s: float = 1.0
    max_s: float = 60.0
    healthy_after_s: float = 60.0  # a run this long before failing resets the series

    def delay(self, consecutive_failures: int) -> float:
        """The wait after the ``consecutive_failures``-th failure in a row (1-based)."""
        return doubling_delay(consecutive_failures, self.initial_s, self.max_s)


@dataclass(slots=True)
class _TaskState:
    state: str = "running"  # running | backing_off | finished
    starts: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_failure_at: float | None = None  # wall clock, for people
    restart_at: float | None = None  # monotonic (the injected clock)


class Supervisor:
    """Starts named tasks, restarts them on failure with a backoff, cancels them on ``stop``."""

    def __init__(
        self,
        backoff: RestartBackoff | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        wall_clock: Clock = time.time,
    ) -> None:
        self._backoff = backoff or RestartBackoff()
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._states: dict[str, _TaskState] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, name: str, factory: TaskFactory) -> asyncio.Task[None]:
        """Run ``factory()`` as task ``name`` until it returns (or ``stop``)."""
        if name in self._states:
            raise ValueError(f"a task named {name!r} is already supervised")
        state = self._states[name] = _TaskState()
        task = asyncio.create_task(self._keep_alive(name, factory, state), name=name)
        self._tasks.append(task)
        return task

    async def stop(self) -> None:
        """Cancel every task and wait until each has ended."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _keep_alive(self, name: str, factory: TaskFactory, state: _TaskState) -> None:
        while True:
            state.state = "running"
            state.restart_at = None
            state.starts += 1
            started = self._clock()
            try:
                await factory()
            except Exception as exc:  # noqa: BLE001 - counted, logged, restarted after a wait
                delay = self._failed(name, state, exc, ran_s=self._clock() - started)
                await self._sleep(delay)
            else:
                state.state = "finished"
                return

    def _failed(self, name: str, state: _TaskState, exc: Exception, *, ran_s: float) -> float:
        """Record one failure; returns how long to wait before the next start."""
        if ran_s >= self._backoff.healthy_after_s:
            state.consecutive_failures = 0  # it ran well for a while: a new series
        state.consecutive_failures += 1
        state.failures += 1
        state.last_error = error_summary(exc)
        state.last_failure_at = self._wall_clock()
        delay = self._backoff.delay(state.consecutive_failures)
        state.state = "backing_off"
        state.restart_at = self._clock() + delay
        _log.error(
            "supervised task %s failed (%d in a row): %s; restarting in %.1f s",
            name,
            state.consecutive_failures,
            state.last_error,
            delay,
            exc_info=exc if state.consecutive_failures == 1 else None,
            extra={
                "task": name,
                "error": state.last_error,
                "consecutive_failures": state.consecutive_failures,
                "restart_in_s": delay,
            },
        )
        return delay

    def status(self) -> dict[str, dict[str, Any]]:
        """Per task: state, restarts, failures (all and in a row), last error, next start."""
        now = self._clock()
        return {
            name: {
                "state": state.state,
                "restarts": state.starts - 1,
                "failures": state.failures,
                "consecutive_failures": state.consecutive_failures,
                "last_error": state.last_error,
                "last_failure_at": state.last_failure_at,
                "restart_in_s": None
                if state.restart_at is None
                else round(max(0.0, state.restart_at - now), 1),
            }
            for name, state in sorted(self._states.items())
        }
