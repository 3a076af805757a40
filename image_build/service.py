"""Starting and stopping the appliance of the current slot, and telling whether it is healthy.

Two adapters behind one small protocol: ``SystemdService`` (a gateway: systemctl)
and ``ProcessService`` (a root without systemd, and the tests): it runs the
installed unit's ``ExecStart`` with the unit's ``Environment=`` and
``WorkingDirectory=``, gives it a ``NOTIFY_SOCKET`` as systemd would, and
counts it healthy once it sent ``READY=1`` and ``GET /healthz`` answers 200.
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
from typing import IO, Protocol

from image_build.errors import InstallError
from image_build.layout import Layout

__all__ = ["ProcessService", "ServiceManager", "SystemdService", "UnitCommand", "health_url"]

_POLL_S = 0.2


class ServiceManager(Protocol):
    def stop(self) -> None: ...

    def start_and_wait(self, deadline_s: float) -> tuple[bool, str]:
        """Start the current slot; (healthy within the deadline, why not)."""
        ...


@dataclass(frozen=True)
class UnitCommand:
    argv: list[str]
    environment: dict[str, str]
    working_directory: Path | None
    notify: bool

    @classmethod
    def parse(cls, unit: Path) -> UnitCommand:
        argv: list[str] = []
        environment: dict[str, str] = {}
        working: Path | None = None
        notify = False
        for line in unit.read_text(encoding="utf-8").splitlines():
            key, _, value = line.strip().partition("=")
            if key == "ExecStart":
                argv = shlex.split(value)
            elif key == "Environment":
                for assignment in shlex.split(value):
                    name, _, setting = assignment.partition("=")
                    environment[name] = setting
            elif key == "WorkingDirectory":
                working = Path(value)
            elif key == "Type":
                notify = value == "notify"
        if not argv:
            raise InstallError(f"{unit} has no ExecStart")
        return cls(argv, environment, working, notify)


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


class ProcessService:
    """The unit's command as a child process (no systemd): for tests and chroots."""

    def __init__(self, layout: Layout, *, log_path: Path | None = None) -> None:
        self.layout = layout
        self.log_path = log_path or layout.root / "yardlink-service.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._notify_dir: tempfile.TemporaryDirectory[str] | None = None
        self._notify: socket.socket | None = None
        self.ready = False
        self.status = ""

    def start(self) -> None:
        command = UnitCommand.parse(self.layout.unit_file)
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
        self._log = self.log_path.open("ab")
        self.ready = False
        self.process = subprocess.Popen(
            command.argv,
            env=env,
            cwd=command.working_directory,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._needs_ready = command.notify

    def _read_notifications(self) -> None:
        assert self._notify is not None
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

    def wait_healthy(self, deadline_s: float) -> tuple[bool, str]:
        url = health_url(self.layout.site_config)
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            assert self.process is not None
            self._read_notifications()
            if self.process.poll() is not None:
                return False, f"the appliance exited with code {self.process.returncode}"
            if (self.ready or not self._needs_ready) and healthz_ok(url):
                return True, ""
            time.sleep(_POLL_S)
        why = "no READY=1" if self._needs_ready and not self.ready else f"{url} not answering"
        return False, f"not healthy within {deadline_s:.0f} s ({why}; status: {self.status!r})"

    def start_and_wait(self, deadline_s: float) -> tuple[bool, str]:
        self.start()
        return self.wait_healthy(deadline_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        if self._notify_dir is not None:
            self._notify_dir.cleanup()
            self._notify_dir = None
        if self._log is not None:
            self._log.close()
            self._log = None


class SystemdService:
    """The ``yardlink.service`` unit through systemctl (``start`` waits for READY=1)."""

    def __init__(self, layout: Layout, unit: str = "yardlink.service") -> None:
        self.layout = layout
        self.unit = unit

    def _systemctl(self, *args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["systemctl", *args], capture_output=True, text=True, timeout=timeout_s, check=False
        )

    def stop(self) -> None:
        self._systemctl("daemon-reload")
        self._systemctl("stop", self.unit)

    def start_and_wait(self, deadline_s: float) -> tuple[bool, str]:
        self._systemctl("daemon-reload")
        self._systemctl("enable", self.unit)
        try:
            started = self._systemctl("start", self.unit, timeout_s=deadline_s)
        except subprocess.TimeoutExpired:
            return False, f"systemctl start did not return within {deadline_s:.0f} s"
        if started.returncode != 0:
            return False, f"systemctl start failed: {started.stderr.strip()}"
        url = health_url(self.layout.site_config)
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if healthz_ok(url):
                return True, ""
            time.sleep(_POLL_S)
        return False, f"{url} did not answer 200 within {deadline_s:.0f} s"
