"""systemd's service protocol: readiness, status and the watchdog, over $NOTIFY_SOCKET.

The datagram protocol of sd_notify(3) is a few lines, so it is spoken directly
(no dependency): ``READY=1`` once the models are loaded and the outbox is open,
``STATUS=...`` to say why the daemon is not ready, ``WATCHDOG=1`` from a task
on the event loop (a stuck loop stops the pings and systemd restarts the
service), ``STOPPING=1`` when the drain begins.  Outside systemd (no
``NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

from appliance.readiness import STOPPING, ReadinessState

__all__ = ["SystemdNotifier", "readiness_listener"]


class SystemdNotifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # an abstract socket is written with a leading '@'
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._watchdog_s = _watchdog_interval_s(env)

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half the unit's WatchdogSec (None when no watchdog)."""
        return self._watchdog_s

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``KEY=value``) in one datagram; False when not under systemd."""
        if not self._address:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto("\n".join(fields).encode("utf-8"), self._address)
            except OSError:
                return False  # systemd gone (shutdown): nothing to tell
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1", "STATUS=draining queued frames into the outbox")

    async def watchdog_loop(self) -> None:
        """Ping the watchdog from the event loop until cancelled."""
        interval = self._watchdog_s
        if interval is None or not self._address:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)


def _watchdog_interval_s(env: Mapping[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # the watchdog is meant for another process
    return int(usec) / 2e6


def readiness_listener(notifier: SystemdNotifier) -> Callable[[ReadinessState], None]:
    """Tell systemd each readiness change: READY=1, STOPPING=1, or STATUS with the reason."""

    def tell(state: ReadinessState) -> None:
        if state.ready:
            notifier.ready("ready: required models loaded, outbox open")
        elif state.reason == STOPPING:
            notifier.stopping()
        else:
            notifier.status(f"not ready: {state.reason}")

    return tell
