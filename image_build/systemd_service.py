"""The appliance under systemd: ``yardlink@a.service`` / ``yardlink@b.service``, one
instance of the template unit per A/B slot, driven through ``systemctl``.

Which instance starts at boot follows ``current`` (the ``yardlink-slot`` generator
makes ``multi-user.target`` want ``yardlink@<current>.service``), so the installer
never enables or disables an instance: one ``rename(2)`` of ``current`` switches
what runs now and what boots.

The A/B switch (``hand_over``), with ``current`` already on the new slot:

1. the new slot's switch file (``EnvironmentFile=``) says ``--standby`` and its
   instance is started without waiting (``start --no-block``: ``Type=notify``
   waits for ``READY=1``, which comes only after the takeover);
2. once its status is the standby line (models loaded, waiting for the lock),
   the old instance's main process gets SIGUSR2: it stops, leaving frames answered
   201 in the spool, releases the lock and the port, and exits 0 (so
   ``Restart=on-failure`` leaves it stopped);
3. the new instance takes the lock, opens the outbox, binds the port, READY=1.

A new instance that fails, or is not in standby within the deadline, is stopped
and the old one never noticed (``old_serving``: the installer points ``current``
back).  One that took over but is not healthy within the deadline is stopped too;
the installer then starts the previous slot again.

An installer killed (SIGKILL) during the switch leaves the switch file, so systemd
would start that instance in standby again at each restart, and an instance of a
slot that is no longer ``current`` once the trial is reverted.  ``settle_instances``
(the next install and ``yardlink image settle``, under the install lock, after the
trial is reverted) makes ``current`` the truth again: every instance of another
slot still up is stopped, every switch file removed, and the current slot's
instance started if what was stopped had been serving, each said in a note.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance.handover import STANDBY_STATUS
from image_build.layout import SLOTS, Layout
from image_build.service import HandOver, health_url, healthz_ok

__all__ = ["Systemctl", "SystemdService", "UnitState", "instance", "run_systemctl"]

Completed = subprocess.CompletedProcess[str]
Systemctl = Callable[[Sequence[str], float], Completed]

_POLL_S = 0.2
_STANDBY_POLL_S = 0.05  # the switch's gap starts when the new one says standby: look often
_CALL_S = 120.0  # any systemctl call but a waiting start
_STANDBY_MODE = "YARDLINK_START_MODE=--standby\n"
_PROPERTIES = ("ActiveState", "SubState", "StatusText", "InvocationID", "Result")


def run_systemctl(args: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemctl", *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def instance(slot: str) -> str:
    return f"yardlink@{slot}.service"


@dataclass(frozen=True)
class UnitState:
    """What ``systemctl show`` says about one instance."""

    active: str = "inactive"  # ActiveState
    sub: str = "dead"  # SubState
    status: str = ""  # StatusText: the daemon's STATUS= line
    invocation: str = ""  # InvocationID: new at each start
    result: str = ""

    @classmethod
    def parse(cls, text: str) -> UnitState:
        values = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
        return cls(
            active=values.get("ActiveState", "inactive"),
            sub=values.get("SubState", "dead"),
            status=values.get("StatusText", ""),
            invocation=values.get("InvocationID", ""),
            result=values.get("Result", ""),
        )

    @property
    def serving(self) -> bool:
        return self.active in ("active", "reloading")

    @property
    def gone(self) -> bool:
        """Its process ended (or it waits to be restarted after a failure)."""
        return self.active in ("inactive", "failed") or self.sub == "auto-restart"

    def describe(self) -> str:
        return f"{self.active}/{self.sub}, result {self.result or '?'}, status {self.status!r}"


class SystemdService:
    """The current slot's instance through systemctl (a gateway, ``--root /``)."""

    def __init__(self, layout: Layout, systemctl: Systemctl = run_systemctl) -> None:
        self.layout = layout
        self._run = systemctl

    def _systemctl(self, *args: str, timeout_s: float = _CALL_S) -> Completed:
        return self._run(list(args), timeout_s)

    def state(self, slot: str) -> UnitState:
        props = [f"--property={name}" for name in _PROPERTIES]
        return UnitState.parse(self._systemctl("show", *props, instance(slot)).stdout)

    def _standby_next_start(self, slot: str, on: bool) -> None:
        path = self.layout.start_mode_file(slot)
        if on:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_STANDBY_MODE, encoding="utf-8")
        else:
            path.unlink(missing_ok=True)

    def _current(self) -> str:
        slot = self.layout.current_slot()
        if slot is None:
            raise OSError(f"{self.layout.current} points at no complete slot")
        return slot

    def stop(self) -> None:
        self._systemctl("stop", *(instance(slot) for slot in SLOTS))

    def reload_units(self) -> None:
        self._systemctl("daemon-reload")  # re-runs the generator: the next boot's choice

    def settle_instances(self, deadline_s: float) -> list[str]:
        """Only ``current``'s instance may run, and no switch file may stay (no switch is
        under way: the caller holds the install lock); returns what was found and done."""
        current = self.layout.current_slot()  # None before the first install: stop all
        notes: list[str] = []
        restart = False
        for slot in SLOTS:
            switch_file = self.layout.start_mode_file(slot)
            left_switch = switch_file.exists()
            state = self.state(slot)
            up = state.active not in ("inactive", "failed")
            if up and (slot != current or (left_switch and not state.serving)):
                self._systemctl("stop", instance(slot))  # before the file: no restart reads it
                restart = restart or state.serving or slot == current
                notes.append(
                    f"{instance(slot)} left running by an install that did not finish"
                    f" ({state.describe()}): stopped, the current slot is {current or 'none'}"
                )
            if left_switch:
                self._standby_next_start(slot, on=False)
                self._systemctl("reset-failed", instance(slot))
                notes.append(f"removed {switch_file}, left by a switch that did not finish")
        if restart and current is not None and not self.state(current).serving:
            healthy, why = self.start_and_wait(deadline_s)
            notes.append(
                f"started {instance(current)}: "
                + ("healthy" if healthy else f"not healthy ({why})")
            )
        return notes

    def start_and_wait(self, deadline_s: float) -> tuple[bool, str]:
        """A plain start of the current slot (the other instance stopped first: it
        would hold the data dir)."""
        slot = self._current()
        self._systemctl("daemon-reload")
        self._systemctl("stop", instance(self.layout.other(slot)))
        self._standby_next_start(slot, on=False)
        self._systemctl("reset-failed", instance(slot))
        try:
            started = self._systemctl("start", instance(slot), timeout_s=deadline_s)
        except subprocess.TimeoutExpired:
            return False, f"systemctl start did not return within {deadline_s:.0f} s"
        if started.returncode != 0:
            return False, f"systemctl start failed: {started.stderr.strip()}"
        return self._wait_healthy(slot, time.monotonic() + deadline_s)

    def hand_over(self, deadline_s: float) -> HandOver:
        new = self._current()
        old = self.layout.other(new)
        self._systemctl("daemon-reload")
        if not self.state(old).serving:  # nothing to hand over from: a plain start
            healthy, why = self.start_and_wait(deadline_s)
            return HandOver(healthy, why)
        deadline = time.monotonic() + deadline_s
        self._systemctl("reset-failed", instance(new))
        before = self.state(new).invocation
        self._standby_next_start(new, on=True)
        try:
            refused = self._start_standby(new, before, deadline)
        finally:
            self._standby_next_start(new, on=False)  # read at exec: later starts are plain
        if refused is not None:
            self._systemctl("stop", instance(new))
            return HandOver(False, refused, old_serving=True)
        self._systemctl("kill", "--kill-who=main", "--signal=SIGUSR2", instance(old))
        healthy, why = self._wait_healthy(new, max(deadline, time.monotonic() + 1.0))
        if healthy:
            self._systemctl("stop", instance(old))  # it exited 0; make sure it stays so
        return HandOver(healthy, why)

    def _start_standby(self, slot: str, before: str, deadline: float) -> str | None:
        """Start ``slot``'s instance in standby; None once it waits for the lock, else why not."""
        started = self._systemctl("start", "--no-block", instance(slot))
        if started.returncode != 0:
            return f"systemctl start failed: {started.stderr.strip()}"
        while True:
            state = self.state(slot)
            if state.status == STANDBY_STATUS or state.serving:
                return None
            if state.invocation != before and state.gone:
                return f"{instance(slot)} ended before standby ({state.describe()})"
            if time.monotonic() > deadline:
                return f"{instance(slot)} not in standby in time ({state.describe()})"
            time.sleep(_STANDBY_POLL_S)

    def _wait_healthy(self, slot: str, deadline: float) -> tuple[bool, str]:
        url = health_url(self.layout.site_config)
        state = UnitState()
        while time.monotonic() < deadline:
            state = self.state(slot)
            if state.gone:
                return False, f"{instance(slot)} ended ({state.describe()})"
            if state.serving and healthz_ok(url):
                return True, ""
            time.sleep(_POLL_S)
        return False, f"{instance(slot)} not healthy in time ({state.describe()}; {url})"
