"""The A/B switch under the real systemd: a Debian root (mmdebstrap) with slot A
installed, its systemd booted as PID 1 in namespaces (``image_build.systemd_root``),
the slot's instance started by the generator because ``current`` points at it; then
``yardlink image install --service systemd`` run inside, as on a gateway, while frames
are pushed from outside throughout.  First an installer killed (SIGKILL) while the
new slot's instance is started in standby, then the whole root killed (a power cut)
and booted again: it starts the old slot, settled back by ``yardlink-settle.service``.
Then another such kill: ``yardlink image settle`` stops that
instance and removes its switch file, the old one serving throughout.  Then the
update: the new slot's instance starts in standby, the old one hands over and ends
cleanly (not restarted), every frame answered 201 is processed.  A release whose
appliance cannot start is reverted with the old instance serving throughout.  Slow
(full bundles, venvs filled in the root): minutes.  Needs root, Debian's mmdebstrap
and util-linux's unshare/nsenter."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from image_build.build import BuiltBundle
from image_build.disk import install_in_root
from image_build.systemd_root import SystemdRoot, make_root
from tests.image_build._harness import FullReleases, frame_request, free_port, unprovisioned_site
from tests.image_build.bundle_kit import member

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

YARDLINK = "/opt/yardlink/current/venv/bin/yardlink"  # the installer of the running slot


class Pusher(threading.Thread):
    """Pushes a frame every 0.25 s while ``active``; keeps the ids answered 201 and
    every refusal's time."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.request = frame_request(f"http://127.0.0.1:{port}")
        self.stopping = threading.Event()
        self.active = threading.Event()
        self.stored: list[tuple[float, str]] = []
        self.refused: list[float] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            if not self.active.wait(0.1):
                continue
            try:
                with urllib.request.urlopen(self.request, timeout=30) as answer:
                    assert answer.status == 201
                    self.stored.append((time.monotonic(), json.loads(answer.read())["id"]))
            except (urllib.error.URLError, OSError):
                self.refused.append(time.monotonic())
            time.sleep(0.25)

    def longest_gap_s(self, since: float) -> float:
        times = [at for at, _ in self.stored if at >= since]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


def _healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return int(answer.status)
    except (urllib.error.URLError, OSError):
        return 0


def _install_while_pushing(
    box: SystemdRoot, rootfs: Path, bundle: str, slot: str, pusher: Pusher
) -> subprocess.CompletedProcess[str]:
    """Run the installer inside; push frames from when the new slot is complete (the
    switch comes next: filling the venv takes minutes) until it returns."""
    complete = rootfs / "opt" / "yardlink" / "slots" / slot / ".complete"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(box.run, YARDLINK, "image", "install", bundle, "--root", "/",
                              "--service", "systemd", "--health-deadline", "400")  # fmt: skip
        while not complete.exists() and not running.done():
            time.sleep(0.05)
        pusher.active.set()
        result = running.result()
    count = len(pusher.stored)
    while len(pusher.stored) < count + 3:  # served after the install, by whichever slot
        assert pusher.is_alive()
        time.sleep(0.1)
    pusher.active.clear()
    return result


def _install_killed_in_standby(box: SystemdRoot, bundle: str) -> None:
    """Run the installer inside and SIGKILL it once the new slot's instance (b) is
    starting in standby, before it has taken over (loading its models or waiting)."""
    nsenter = ["nsenter", "-t", str(box.pid), "-m", "-p", "-r", "-w"]
    command = [*nsenter, YARDLINK, "image", "install", bundle, "--root", "/", "--service",
               "systemd", "--health-deadline", "400"]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as run:
        deadline = time.monotonic() + 900  # the slot's venv is filled first: minutes
        while _show(box, "yardlink@b.service", "ActiveState")["ActiveState"] != "activating":
            assert run.poll() is None and time.monotonic() < deadline  # not yet in standby
            time.sleep(0.05)
        for process in psutil.Process(run.pid).children(recursive=True):
            process.kill()  # the installer (nsenter's child), as a power cut would
        run.wait()


def _reboot_starts_the_confirmed_slot(box: SystemdRoot, rootfs: Path, port: int) -> None:
    """Power cut with b on trial (`current` on b): the next boot starts a, the slot last
    confirmed, after yardlink-settle.service put `current` back on it and closed the trial."""
    state_file = rootfs / "opt" / "yardlink" / "image-state.json"
    assert json.loads(state_file.read_text())["trial"] == {"previous": "a", "slot": "b"}
    assert (rootfs / "opt" / "yardlink" / "current").readlink() == Path("slots/b")
    box.stop()
    box.boot()
    deadline = time.monotonic() + 600
    while _healthz(port) != 200:
        assert time.monotonic() < deadline, box.run("journalctl", "--no-pager").stdout[-4000:]
        time.sleep(1)
    assert (rootfs / "opt" / "yardlink" / "current").readlink() == Path("slots/a")
    assert json.loads(state_file.read_text())["trial"] is None
    settle = _show(box, "yardlink-settle.service", "ActiveState", "Result")
    assert settle == {"ActiveState": "active", "Result": "success"}
    journal = box.run("journalctl", "--no-pager", "-u", "yardlink-settle.service").stdout
    assert "switched back to slot a, the last one confirmed" in journal
    assert _show(box, "yardlink@a.service", "ActiveState")["ActiveState"] == "active"
    assert _show(box, "yardlink@b.service", "ActiveState")["ActiveState"] == "inactive"
    wants = _show(box, "multi-user.target", "Wants")["Wants"].split()
    assert "yardlink@a.service" in wants and "yardlink@b.service" not in wants


def _show(box: SystemdRoot, unit: str, *props: str) -> dict[str, str]:
    out = box.run("systemctl", "show", *(f"--property={p}" for p in props), unit).stdout
    return dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def bundles(
    tmp_path_factory: pytest.TempPathFactory, full_releases: FullReleases
) -> tuple[int, dict[str, BuiltBundle]]:
    work = tmp_path_factory.mktemp("systemd-bundles")
    port = free_port()
    return port, full_releases(work, unprovisioned_site(work / "site.toml", port))


def test_the_ab_switch_under_systemd_hands_over_and_reverts(
    tmp_path: Path, bundles: tuple[int, dict[str, BuiltBundle]]
) -> None:
    port, built = bundles
    rootfs = tmp_path / "root"
    make_root(rootfs)
    trust = tmp_path / "keyring.json"
    trust.write_bytes(member(built["v1"].path, "keys/keyring.json"))
    install_in_root(rootfs, built["v1"].path, trust)
    for name in ("v2", "broken"):
        shutil.copyfile(built[name].path, rootfs / "root" / f"{name}.tar.zst")
    data = rootfs / "var" / "lib" / "yardlink"
    box = SystemdRoot(rootfs)
    box.boot()
    pusher = Pusher(port)
    try:
        deadline = time.monotonic() + 600  # the generator wants yardlink@a: boot starts it
        while _healthz(port) != 200:
            assert time.monotonic() < deadline, box.run("journalctl", "--no-pager").stdout[-4000:]
            time.sleep(1)
        a = _show(box, "yardlink@a.service", "ActiveState", "NoNewPrivileges", "ProtectSystem",
                  "WatchdogUSec", "Type", "User", "Restart")  # fmt: skip
        assert a == {"ActiveState": "active", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                     "WatchdogUSec": "30s", "Type": "notify", "User": "yardlink",
                     "Restart": "on-failure"}  # fmt: skip
        _install_killed_in_standby(box, "/root/v2.tar.zst")
        _reboot_starts_the_confirmed_slot(box, rootfs, port)
        _install_killed_in_standby(box, "/root/v2.tar.zst")
        assert box.run("test", "-e", "/run/yardlink-switch/b.env").returncode == 0
        assert _show(box, "yardlink@a.service", "ActiveState")["ActiveState"] == "active"
        settled = box.run(YARDLINK, "image", "settle", "--root", "/")
        assert settled.returncode == 0, settled.stderr
        assert "settled: yardlink@b.service left running" in settled.stderr
        assert "settled: removed /run/yardlink-switch/b.env" in settled.stderr
        assert box.run("test", "-e", "/run/yardlink-switch/b.env").returncode == 1
        assert (rootfs / "opt" / "yardlink" / "current").readlink() == Path("slots/a")
        assert _show(box, "yardlink@b.service", "ActiveState")["ActiveState"] == "inactive"
        a = _show(box, "yardlink@a.service", "ActiveState", "NRestarts")
        assert a == {"ActiveState": "active", "NRestarts": "0"}  # served throughout
        assert _healthz(port) == 200

        pusher.start()
        started = time.monotonic()
        update = _install_while_pushing(box, rootfs, "/root/v2.tar.zst", "b", pusher)
        assert update.returncode == 0, update.stderr
        assert (rootfs / "opt" / "yardlink" / "current").readlink() == Path("slots/b")
        b = _show(box, "yardlink@b.service", "ActiveState", "NRestarts")
        assert b == {"ActiveState": "active", "NRestarts": "0"}
        a = _show(box, "yardlink@a.service", "ActiveState", "Result", "NRestarts")
        assert a == {"ActiveState": "inactive", "Result": "success", "NRestarts": "0"}
        journal = box.run("journalctl", "--no-pager", "-u", "yardlink@b.service").stdout
        assert "standby: models loaded" in journal  # started beside the old one
        wants = _show(box, "multi-user.target", "Wants")["Wants"].split()
        assert "yardlink@b.service" in wants and "yardlink@a.service" not in wants  # next boot
        assert box.run("test", "-e", "/run/yardlink-switch/b.env").returncode == 1
        print(f"switch under systemd: longest frame gap {pusher.longest_gap_s(started):.2f} s")

        refused_before = len(pusher.refused)
        revert = _install_while_pushing(box, rootfs, "/root/broken.tar.zst", "a", pusher)
        assert revert.returncode == 2, revert.stderr
        assert "switched back to slot b, which kept serving throughout" in revert.stderr
        assert len(pusher.refused) == refused_before  # the old instance never stopped
        assert (rootfs / "opt" / "yardlink" / "current").readlink() == Path("slots/b")
        assert _show(box, "yardlink@b.service", "ActiveState")["ActiveState"] == "active"
        assert _show(box, "yardlink@a.service", "ActiveState")["ActiveState"] == "inactive"

        pusher.stopping.set()
        pusher.join(60)
        stored = {frame_id for _, frame_id in pusher.stored}
        processed = data / "spool" / "processed" / "gate-in"
        deadline = time.monotonic() + 600  # OCR on each, on a loaded machine
        while not stored <= {p.name for p in processed.glob("push-*")}:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    finally:
        pusher.stopping.set()
        box.stop()
