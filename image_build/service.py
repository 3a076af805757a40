"""Starting and stopping the appliance of the current slot, and telling whether it is healthy.

Two adapters behind one small protocol: ``SystemdService`` (a gateway: systemctl,
``image_build.systemd_service``) and ``ProcessService`` (a root without systemd,
and the tests): it runs the installed unit's ``ExecStart`` for the current slot
(``%i``) with the unit's ``Environment=`` and ``WorkingDirectory=``, gives it a
``NOTIFY_SOCKET`` as systemd would, and counts it healthy once it sent
``READY=1`` and ``GET /healthz`` answers 200.

``hand_over`` is the A/B switch: both start the new slot's appliance in standby
beside the running one (``appliance.handover``) so that frames are refused only
while the data dir and the port change hands, not while the models load.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from appliance.handover import STANDBY_STATUS
from image_build.errors import InstallError
from image_build.layout import Layout

__all__ = [
    "HandOver",
    "ProcessService",
    "ServiceManager",
    "UnitCommand",
    "health_url",
    "healthz_ok",
]

_POLL_S = 0.2
_STANDBY_POLL_S = 0.02  # the switch's gap starts when the new one says standby: look often
_STOP_S = 30.0  # a stopping appliance gets this long to drain before SIGKILL


@dataclass(frozen=True)
class HandOver:
    """How a switch to the current slot went."""

    healthy: bool
    why: str = ""  # why not healthy
    old_serving: bool = False  # not healthy, and the previous process never stopped serving


class ServiceManager(Protocol):
    def stop(self) -> None: ...

    def start_and_wait(self, deadline_s: float) -> tuple[bool, str]:
        """Start the current slot; (healthy within the deadline, why not)."""
        ...

    def hand_over(self, deadline_s: float) -> HandOver:
        """Replace the running appliance by the current slot's; healthy within the deadline?"""
        ...

    def settle_instances(self, deadline_s: float) -> list[str]:
        """After a killed install (trial reverted): leave only the current slot's appliance
        running, nothing of the switch behind; what was found and done, for the operator."""
        ...

    def reload_units(self) -> None:
        """The units, ``current`` or the trial changed: have the service manager read them
        again (its boot generator too), so that what it shows is what the next boot does."""
        ...


@dataclass(frozen=True)
class UnitCommand:
    argv: list[str]
    environment: dict[str, str]
    working_directory: Path | None
    notify: bool

    @classmethod
    def parse(cls, unit: Path, instance: str | None = None) -> UnitCommand:
        """The unit's command for ``instance`` (what ``%i`` stands for in a template),
        ``$NAME`` words of ``ExecStart`` taken from its ``Environment=`` as systemd
        does (an unset one is dropped; ``EnvironmentFile=`` is not read)."""
        text = unit.read_text(encoding="utf-8")
        if "%i" in text or "%I" in text:
            if instance is None:
                raise InstallError(f"{unit} is a template: which instance (slot) to run?")
            text = text.replace("%i", instance).replace("%I", instance)
        exec_start = ""
        environment: dict[str, str] = {}
        working: Path | None = None
        notify = False
        for line in text.splitlines():
            key, _, value = line.strip().partition("=")
            if key == "ExecStart":
                exec_start = value
            elif key == "Environment":
                for assignment in shlex.split(value):
                    name, _, setting = assignment.partition("=")
                    environment[name] = setting
            elif key == "WorkingDirectory":
                working = Path(value)
            elif key == "Type":
                notify = value == "notify"
        argv = [
            part for word in shlex.split(exec_start) for part in _expand_word(word, environment)
        ]
        if not argv:
            raise InstallError(f"{unit} has no ExecStart")
        return cls(argv, environment, working, notify)


def _expand_word(word: str, environment: dict[str, str]) -> list[str]:
    """systemd's ``$NAME`` word: the variable's value split on whitespace (none if unset)."""
    name = word[1:].strip("{}") if word.startswith("$") else ""
    if name and name.replace("_", "").isalnum():
        return environment.get(name, "").split()
    return [word]


def health_url(site_toml: Path) -> str:
    """``http://host:port/healthz`` of the local API the site config sets."""
    data = tomllib.loads(site_toml.read_text(encoding="utf-8"))
    api = data.get("local_api", {})
    host = api.get("host", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{host}:{api.get('port', 8477)}/healthz"


def healthz_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


class _Child:
    """One appliance process started from the unit's command, with its NOTIFY_SOCKET."""

    def __init__(self, command: UnitCommand, log_path: Path, extra_args: list[str]) -> None:
        self._notify_dir = tempfile.TemporaryDirectory(prefix="yardlink-notify-")
        notify_path = str(Path(self._notify_dir.name) / "notify")
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(notify_path)
        self._notify.setblocking(False)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **command.environment}
        if command.notify:
            env["NOTIFY_SOCKET"] = notify_path
        if command.working_directory is not None:
            command.working_directory.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self.needs_ready = command.notify
        self.ready = False
        self.status = ""
        self.process = subprocess.Popen(
            [*command.argv, *extra_args],
            env=env,
            cwd=command.working_directory,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def read_notifications(self) -> None:
        while True:
            try:
                message = self._notify.recv(4096).decode("utf-8", "replace")
            except BlockingIOError:
                return
            for line in message.splitlines():
                if line == "READY=1":
                    self.ready = True
                elif line.startswith("STATUS="):
                    self.status = line[len("STATUS=") :]

    def exited(self) -> int | None:
        return self.process.poll()

    def send(self, signum: int) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def stop(self, timeout_s: float, signum: int = signal.SIGTERM) -> None:
        """Stop it (``signum``, then SIGKILL after ``timeout_s``) and close what it had."""
        self.send(signum)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            self.process.wait()
        self._notify.close()
        self._notify_dir.cleanup()
        self._log.close()


class ProcessService:
    """The unit's command as a child process (no systemd): for tests and chroots."""

    def __init__(self, layout: Layout, *, log_path: Path | None = None) -> None:
        self.layout = layout
        self.log_path = log_path or layout.root / "yardlink-service.log"
        self.child: _Child | None = None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return None if self.child is None else self.child.process

    @property
    def ready(self) -> bool:
        return self.child is not None and self.child.ready

    @property
    def status(self) -> str:
        return "" if self.child is None else self.child.status

    def _command(self) -> UnitCommand:
        return UnitCommand.parse(self.layout.unit_file, self.layout.current_slot())

    def start(self, *extra_args: str) -> None:
        command = self._command()
        self.child = _Child(command, self.log_path, list(extra_args))

    def wait_healthy(self, deadline_s: float) -> tuple[bool, str]:
        assert self.child is not None
        return _wait_healthy(self.child, health_url(self.layout.site_config), deadline_s)

    def start_and_wait(self, deadline_s: float) -> tuple[bool, str]:
        self.start()
        return self.wait_healthy(deadline_s)

    def hand_over(self, deadline_s: float) -> HandOver:
        """A standby start: the current slot's appliance loads its models beside the
        running one (``--standby``); only once it says so is the old one told to hand
        over (SIGUSR2: it stops, releasing the data dir and the port), and the new one
        takes them.  A new one that exits or is not in standby within the deadline is
        stopped and the old one never noticed (``old_serving``)."""
        old = self.child
        if old is None or old.exited() is not None:
            if old is not None:
                old.stop(0)
            self.child = None
            healthy, why = self.start_and_wait(deadline_s)
            return HandOver(healthy, why)
        new = _Child(self._command(), self.log_path, ["--standby"])
        deadline = time.monotonic() + deadline_s
        while not (new.status == STANDBY_STATUS or new.ready):
            new.read_notifications()
            code = new.exited()
            if code is not None or time.monotonic() > deadline:
                new.stop(_STOP_S)
                why = (
                    f"the appliance exited with code {code}"
                    if code is not None
                    else f"not in standby within {deadline_s:.0f} s (status: {new.status!r})"
                )
                return HandOver(False, why, old_serving=True)
            time.sleep(_STANDBY_POLL_S)
        old.stop(_STOP_S, signal.SIGUSR2)
        self.child = new
        healthy, why = self.wait_healthy(max(1.0, deadline - time.monotonic()))
        return HandOver(healthy, why)

    def settle_instances(self, deadline_s: float) -> list[str]:
        """Nothing to settle: a standby child of a killed installer is restarted by no
        one and gives up waiting by itself (``appliance.handover.STANDBY_WAIT_S``)."""
        return []

    def reload_units(self) -> None:
        """Nothing to reload: the unit is read at each start."""

    def stop(self, timeout_s: float = _STOP_S) -> None:
        child, self.child = self.child, None
        if child is not None:
            child.stop(timeout_s)


def _wait_healthy(child: _Child, url: str, deadline_s: float) -> tuple[bool, str]:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        child.read_notifications()
        if child.exited() is not None:
            return False, f"the appliance exited with code {child.process.returncode}"
        if (child.ready or not child.needs_ready) and healthz_ok(url):
            return True, ""
        time.sleep(_POLL_S)
    why = "no READY=1" if child.needs_ready and not child.ready else f"{url} not answering"
    return False, f"not healthy within {deadline_s:.0f} s ({why}; status: {child.status!r})"
