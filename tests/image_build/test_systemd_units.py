"""The units under systemd, without systemd: what the template unit and the boot
generator say, what the installer writes, and which systemctl commands the A/B
switch runs, in which order (``SystemdService`` against a scripted systemctl that
keeps each instance's state as systemd would report it; /healthz is a real HTTP
server on loopback).  The real systemd run is ``test_systemd_switch.py`` (slow)."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from appliance.handover import STANDBY_STATUS
from image_build.build import UNIT_FILES, BuiltBundle, unit_template
from image_build.errors import InstallError
from image_build.install import settle_root, write_units
from image_build.layout import ImageState, Layout
from image_build.service import UnitCommand
from image_build.systemd_service import SystemdService, UnitState
from tests.image_build.bundle_kit import read_members


def _slot(layout: Layout, name: str) -> None:
    units = layout.slot(name) / "systemd"
    units.mkdir(parents=True)
    for unit in UNIT_FILES:
        (units / unit).write_bytes(unit_template(unit))
    (layout.slot(name) / ".complete").write_text("0.1.0")


class _Healthz(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Layout]:
    """Slots a (current) and b, the units of a, and a site config whose /healthz answers."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    layout = Layout(tmp_path / "root")
    for name in ("a", "b"):
        _slot(layout, name)
    layout.switch_to("a")
    write_units(layout, "a")
    layout.etc.mkdir(parents=True)
    port = server.server_address[1]
    layout.site_config.write_text(f"version = 1\n[local_api]\nport = {port}\n")
    yield layout
    server.shutdown()
    server.server_close()


def test_the_template_runs_the_instances_slot_with_the_units_protections(
    default_slim: BuiltBundle,
) -> None:
    contents = {info.name: data for info, data in read_members(default_slim.path)}
    assert "systemd/yardlink.service" not in contents
    unit = contents["systemd/yardlink@.service"].decode().splitlines()
    exec_start = next(line for line in unit if line.startswith("ExecStart="))
    assert exec_start.startswith("ExecStart=@PREFIX@/opt/yardlink/slots/%i/venv/bin/yardlink ")
    assert exec_start.endswith(" $YARDLINK_START_MODE")
    assert "EnvironmentFile=-@PREFIX@/run/yardlink-switch/%i.env" in unit
    assert "[Install]" not in unit  # the generator says which instance boots, not enable
    generator = contents["systemd/yardlink-slot-generator"].decode()
    assert generator.startswith("#!/bin/sh\n")
    assert 'base="@PREFIX@/opt/yardlink"' in generator  # the installer fills in the prefix
    assert 'readlink "$base/current"' in generator  # the code follows current, not a comment


def test_the_installer_writes_the_template_and_an_executable_generator(
    gateway: Layout,
) -> None:
    gateway.legacy_unit_file.write_text("[Service]\nExecStart=/bin/true\n")
    write_units(gateway, "b")
    assert not gateway.legacy_unit_file.exists()  # it would start a second appliance
    text = gateway.unit_file.read_text()
    assert "@PREFIX@" not in text
    assert f"ExecStart={gateway.root}/opt/yardlink/slots/%i/venv/bin/yardlink" in text
    assert gateway.generator_file.stat().st_mode & 0o777 == 0o755
    assert gateway.unit_file.stat().st_mode & 0o777 == 0o644


def _generate(layout: Layout, out: Path) -> list[str]:
    subprocess.run([str(layout.generator_file), str(out)], check=True, timeout=30)
    return sorted(p.name for p in (out / "multi-user.target.wants").glob("*"))


def test_the_instance_started_at_boot_follows_current(gateway: Layout, tmp_path: Path) -> None:
    assert _generate(gateway, tmp_path / "boot1") == ["yardlink@a.service"]
    link = tmp_path / "boot1" / "multi-user.target.wants" / "yardlink@a.service"
    assert link.readlink() == gateway.unit_file
    gateway.switch_to("b")
    assert _generate(gateway, tmp_path / "boot2") == ["yardlink@b.service"]
    gateway.current.unlink()  # nothing installed yet: nothing wanted
    subprocess.run([str(gateway.generator_file), str(tmp_path / "boot3")], check=True)
    assert not (tmp_path / "boot3").exists()


def test_the_process_service_runs_the_template_for_the_current_slot(gateway: Layout) -> None:
    command = UnitCommand.parse(gateway.unit_file, "b")
    assert command.argv == [
        f"{gateway.root}/opt/yardlink/slots/b/venv/bin/yardlink", "appliance", "run",
        "--config", str(gateway.site_config),
    ]  # fmt: skip
    assert command.notify and command.environment["PYTHONUNBUFFERED"] == "1"
    with pytest.raises(InstallError, match="template"):
        UnitCommand.parse(gateway.unit_file)
    plain = gateway.root / "plain.service"
    plain.write_text("Environment=MODE='--standby --x'\nExecStart=/bin/run $MODE ${MODE} $UNSET\n")
    assert UnitCommand.parse(plain).argv == ["/bin/run", "--standby", "--x", "--standby", "--x"]


class FakeSystemctl:
    """systemctl as the installer sees it: each instance's state, moved on by the
    commands as systemd would; ``new_does`` says what the new slot's appliance does
    once started in standby."""

    def __init__(self, layout: Layout, new_does: str, old_running: bool = True) -> None:
        self.layout = layout
        self.new_does = new_does  # "standby" | "fails" | "never_ready" | "loading"
        self.calls: list[list[str]] = []
        self.start_modes: dict[str, str] = {}  # unit -> its switch file when started
        self.units: dict[str, UnitState] = {}
        if old_running:
            self.units["yardlink@a.service"] = UnitState("active", "running", "ready", "a1")

    def __call__(self, args: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(args))
        verb, unit = args[0], args[-1]
        stdout = ""
        if verb == "show":
            state = self.units.get(unit, UnitState())
            stdout = (
                f"ActiveState={state.active}\nSubState={state.sub}\nStatusText={state.status}\n"
                f"InvocationID={state.invocation}\nResult={state.result}\n"
            )
        elif verb == "start":
            mode_file = self.layout.start_mode_file(unit.removeprefix("yardlink@")[0])
            self.start_modes[unit] = mode_file.read_text() if mode_file.exists() else ""
            if "--no-block" not in args:
                self.units[unit] = UnitState("active", "running", "ready", "plain")
            elif self.new_does == "fails":  # exited 2, systemd will restart it in 5 s
                self.units[unit] = UnitState("activating", "auto-restart", "", "b1", "exit-code")
            elif self.new_does == "loading":  # still loading its models: no standby yet
                self.units[unit] = UnitState("activating", "start", "loading models", "b1")
            else:
                self.units[unit] = UnitState("activating", "start", STANDBY_STATUS, "b1")
        elif verb == "kill" and "--signal=SIGUSR2" in args:
            self.units[unit] = UnitState("inactive", "dead", "", self.units[unit].invocation)
            new = "yardlink@b.service"
            if self.new_does == "standby":
                self.units[new] = UnitState("active", "running", "ready", "b1")
        elif verb == "stop":
            for name in args[1:]:
                if name in self.units:
                    self.units[name] = UnitState("inactive", "dead", "", "")
        return subprocess.CompletedProcess(list(args), 0, stdout, "")

    def index(self, *call: str) -> int:
        return self.calls.index(list(call))


def test_the_switch_starts_the_new_slot_in_standby_then_tells_the_old_one(
    gateway: Layout,
) -> None:
    gateway.switch_to("b")
    systemctl = FakeSystemctl(gateway, "standby")
    outcome = SystemdService(gateway, systemctl).hand_over(30.0)
    assert outcome.healthy, outcome.why
    start = systemctl.index("start", "--no-block", "yardlink@b.service")
    handover = systemctl.index("kill", "--kill-who=main", "--signal=SIGUSR2", "yardlink@a.service")
    assert start < handover < systemctl.index("stop", "yardlink@a.service")
    assert all(call[:2] != ["stop", "yardlink@a.service"] for call in systemctl.calls[:handover])
    assert systemctl.start_modes["yardlink@b.service"] == "YARDLINK_START_MODE=--standby\n"
    assert not gateway.start_mode_file("b").exists()  # a later restart is a plain start
    assert ["enable", "yardlink@b.service"] not in systemctl.calls  # boot follows current


def test_a_new_slot_that_fails_before_standby_is_stopped_and_the_old_one_untouched(
    gateway: Layout,
) -> None:
    gateway.switch_to("b")
    systemctl = FakeSystemctl(gateway, "fails")
    outcome = SystemdService(gateway, systemctl).hand_over(30.0)
    assert not outcome.healthy and outcome.old_serving
    assert "yardlink@b.service ended before standby" in outcome.why
    assert "auto-restart" in outcome.why
    assert ["stop", "yardlink@b.service"] in systemctl.calls  # no restart loop left behind
    assert not any(call[0] == "kill" or "yardlink@a.service" in call[1:] and call[0] == "stop"
                   for call in systemctl.calls)  # fmt: skip
    assert systemctl.units["yardlink@a.service"].serving
    assert not gateway.start_mode_file("b").exists()


def test_a_new_slot_not_ready_after_the_handover_is_reported_not_healthy(
    gateway: Layout,
) -> None:
    gateway.switch_to("b")
    systemctl = FakeSystemctl(gateway, "never_ready")
    outcome = SystemdService(gateway, systemctl).hand_over(0.5)
    assert not outcome.healthy and not outcome.old_serving  # the installer starts a again
    assert "yardlink@b.service not healthy in time" in outcome.why


def test_with_no_old_instance_running_the_new_slot_gets_a_plain_start(gateway: Layout) -> None:
    gateway.switch_to("b")
    systemctl = FakeSystemctl(gateway, "standby", old_running=False)
    outcome = SystemdService(gateway, systemctl).hand_over(30.0)
    assert outcome.healthy, outcome.why
    assert ["start", "yardlink@b.service"] in systemctl.calls
    assert systemctl.start_modes["yardlink@b.service"] == ""  # no --standby: nobody to wait for
    assert not any(call[0] == "kill" for call in systemctl.calls)
    assert systemctl.index("stop", "yardlink@a.service") < systemctl.index(
        "start", "yardlink@b.service"
    )


class StoredSystemctl(FakeSystemctl):
    """``FakeSystemctl`` whose instances' states live in a file, as systemd's outlive an
    installer: a killed installer's process leaves them for the next one to find."""

    def __init__(self, layout: Layout, new_does: str, states: Path) -> None:
        super().__init__(layout, new_does)
        self.states = states
        if not states.exists():
            self._save()

    def _save(self) -> None:
        document = {unit: dataclasses.astuple(state) for unit, state in self.units.items()}
        temp = self.states.with_suffix(".tmp")  # renamed: a reader or a kill never sees half
        temp.write_text(json.dumps(document))
        os.replace(temp, self.states)

    def __call__(self, args: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        stored = json.loads(self.states.read_text())
        self.units = {unit: UnitState(*fields) for unit, fields in stored.items()}
        try:
            return super().__call__(args, timeout_s)
        finally:
            self._save()


def _switch_until_killed(root: Path, states: Path) -> None:
    """An installer's hand-over whose new instance stays loading its models (never in
    standby): runs until the test kills the process."""
    layout = Layout(root)
    SystemdService(layout, StoredSystemctl(layout, "loading", states)).hand_over(600.0)


def _killed_during_standby(gateway: Layout, tmp_path: Path) -> Path:
    """Switch a -> b as ``install`` does, SIGKILL the installer while b waits to be in
    standby; returns the file of the instances' states it left."""
    states = tmp_path / "units.json"
    StoredSystemctl(gateway, "loading", states)  # a serving
    ImageState(active="a", trial={"slot": "b", "previous": "a"}).save(gateway.state_file)
    gateway.switch_to("b")
    installer = multiprocessing.get_context("spawn").Process(
        target=_switch_until_killed, args=(gateway.root, states)
    )
    installer.start()
    deadline = time.monotonic() + 60.0
    while "yardlink@b.service" not in json.loads(states.read_text()):
        assert time.monotonic() < deadline and installer.is_alive()
        time.sleep(0.05)
    os.kill(installer.pid or 0, signal.SIGKILL)
    installer.join()
    return states


def test_a_switch_left_open_by_a_killed_installer_is_settled_by_the_next_one(
    gateway: Layout, tmp_path: Path
) -> None:
    states = _killed_during_standby(gateway, tmp_path)
    assert gateway.start_mode_file("b").exists()  # what systemd would restart b with
    systemctl = StoredSystemctl(gateway, "standby", states)
    state, notes = settle_root(gateway, SystemdService(gateway, systemctl), 30.0)
    assert gateway.current_slot() == "a" and state.trial is None
    assert not gateway.start_mode_file("b").exists()
    assert systemctl.index("stop", "yardlink@b.service") < systemctl.index(
        "reset-failed", "yardlink@b.service"
    )
    assert not systemctl.units["yardlink@b.service"].serving
    assert systemctl.units["yardlink@a.service"].serving
    assert not any("yardlink@a.service" in call for call in systemctl.calls if call[0] != "show")
    assert any("yardlink@b.service left running" in note and "stopped" in note for note in notes)
    assert any(f"removed {gateway.start_mode_file('b')}" in note for note in notes)
    # the next switch to b starts it afresh in standby, not the one left behind
    gateway.switch_to("b")
    outcome = SystemdService(gateway, systemctl).hand_over(30.0)
    assert outcome.healthy, outcome.why
    assert systemctl.start_modes["yardlink@b.service"] == "YARDLINK_START_MODE=--standby\n"


def test_a_stale_standby_that_took_over_is_stopped_and_the_current_slot_started(
    gateway: Layout, tmp_path: Path
) -> None:
    states = _killed_during_standby(gateway, tmp_path)
    systemctl = StoredSystemctl(gateway, "standby", states)
    # meanwhile a died and the standby b took the data dir: b serves, on a reverted trial
    systemctl.units["yardlink@a.service"] = UnitState("failed", "failed", "", "a1", "signal")
    systemctl.units["yardlink@b.service"] = UnitState("active", "running", "ready", "b1")
    systemctl._save()
    _, notes = settle_root(gateway, SystemdService(gateway, systemctl), 30.0)
    assert gateway.current_slot() == "a"
    assert systemctl.index("stop", "yardlink@b.service") < systemctl.index(
        "start", "yardlink@a.service"
    )
    assert systemctl.units["yardlink@a.service"].serving
    assert not systemctl.units["yardlink@b.service"].serving
    assert notes[-1] == "started yardlink@a.service: healthy"


def test_settling_with_no_switch_left_open_touches_no_instance(
    gateway: Layout, tmp_path: Path
) -> None:
    systemctl = StoredSystemctl(gateway, "standby", tmp_path / "units.json")
    state, notes = settle_root(gateway, SystemdService(gateway, systemctl), 30.0)
    assert notes == [] and gateway.current_slot() == "a" and state.trial is None
    assert all(call[0] == "show" for call in systemctl.calls)


def test_a_switch_file_left_before_any_slot_is_current_is_removed(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root")
    layout.base.mkdir(parents=True)
    layout.start_mode_file("a").parent.mkdir(parents=True)
    layout.start_mode_file("a").write_text("YARDLINK_START_MODE=--standby\n")
    systemctl = StoredSystemctl(layout, "standby", tmp_path / "units.json")
    systemctl.units = {"yardlink@a.service": UnitState("activating", "start", STANDBY_STATUS)}
    systemctl._save()
    _, notes = settle_root(layout, SystemdService(layout, systemctl), 30.0)
    assert not layout.start_mode_file("a").exists()
    assert ["stop", "yardlink@a.service"] in systemctl.calls
    assert not any(call[0] == "start" for call in systemctl.calls)  # nothing is current
    assert "the current slot is none" in notes[0]
