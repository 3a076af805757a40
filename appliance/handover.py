"""One appliance process per data directory, and the standby start of an A/B switch.

``run_daemon`` holds an exclusive ``flock`` on ``<data_dir>/appliance.lock`` from
before it opens anything in the data directory until its outbox is closed.  A
plain start that finds it held stops at once with ``DataDirBusy``.

A *standby* start (``yardlink appliance run --standby``, what the installer uses
for an A/B switch) loads and warms its models first, while the running process
still serves; refuses to go on when a required model did not load
(``StandbyRefused``: the running one is never disturbed); says ``STATUS=standby:
...`` to the service manager; and then waits for the lock.  Whoever manages the
service then tells the old process to hand over (SIGUSR2: stop, leaving durably
pushed frames in the spool for the successor) and the new one opens the outbox
and binds the port as soon as the lock is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from appliance.errors import ApplianceError

__all__ = [
    "LOCK_NAME",
    "STANDBY_STATUS",
    "DataDirBusy",
    "DataDirClaim",
    "DataDirLock",
    "StandbyAbandoned",
    "StandbyRefused",
]

LOCK_NAME = "appliance.lock"
STANDBY_STATUS = "standby: models loaded, waiting for the running appliance to hand over"
STANDBY_WAIT_S = 600.0  # a standby nobody hands over to gives up after this long
_POLL_S = 0.02  # how often a standby tries the lock

_log = logging.getLogger(__name__)


class DataDirBusy(ApplianceError):
    """Another appliance process holds the data directory."""

    retryable = True


class StandbyRefused(ApplianceError):
    """A standby start whose models did not all load: it does not take over."""


class StandbyAbandoned(ApplianceError):
    """A standby start was told to stop before it took over (a switch given up)."""

    retryable = True


class DataDirLock:
    """The exclusive ``flock`` on ``<data_dir>/appliance.lock`` (released when the
    process dies, however it dies); the file holds the holder's pid, for messages."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        """The pid written by the holder ("?" when unreadable)."""
        try:
            return self.path.read_text(encoding="utf-8").strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor drops the flock


class DataDirClaim:
    """What ``Daemon.start`` awaits once its models are loaded: the data dir's lock,
    at once (a plain start) or after a standby wait (``standby=True``)."""

    def __init__(
        self,
        lock: DataDirLock,
        *,
        standby: bool,
        stop_requested: asyncio.Event,
        tell_status: Callable[[str], object] = lambda _status: None,
        wait_s: float = STANDBY_WAIT_S,
    ) -> None:
        self.lock = lock
        self.standby = standby
        self.stop_requested = stop_requested
        self.tell_status = tell_status
        self.wait_s = wait_s

    async def __call__(self, problem: str | None) -> None:
        """``problem``: why the loaded tasks would not make this appliance ready."""
        if not self.standby:
            if not await asyncio.to_thread(self.lock.try_acquire):
                raise DataDirBusy(
                    f"another appliance (pid {self.lock.holder()}) holds {self.lock.path};"
                    " stop it first (or start this one with --standby to take over from it)"
                )
            return
        if problem is not None:
            raise StandbyRefused(f"not taking over from the running appliance: {problem}")
        _log.info(STANDBY_STATUS, extra={"lock": str(self.lock.path)})
        self.tell_status(STANDBY_STATUS)
        deadline = time.monotonic() + self.wait_s
        while not await asyncio.to_thread(self.lock.try_acquire):
            if self.stop_requested.is_set():
                raise StandbyAbandoned("stopped while waiting in standby; nothing was opened")
            if time.monotonic() > deadline:
                raise DataDirBusy(
                    f"standby: the appliance (pid {self.lock.holder()}) did not hand over"
                    f" {self.lock.path} within {self.wait_s:.0f} s"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), _POLL_S)
