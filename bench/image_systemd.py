"""The A/B switch under the real systemd, for ``python -m bench.image``: a Debian root
(mmdebstrap) with the first bundle in slot A, its systemd booted as PID 1 in
namespaces (``image_build.systemd_root``), then the newer bundle installed inside
with ``yardlink image install --service systemd`` while the same watchers as the
rest of the bench ask ``/healthz`` and push frames from outside.  Then, interleaved
on the two installed slots: the standby switch alone (``SystemdService.hand_over``
run inside, ``current`` flipped) against its anchor, ``systemctl restart`` of the
running instance (stop, then start: the switch under systemd before the template
unit).  Needs root, mmdebstrap, unshare and nsenter; otherwise no rows, and says so.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.request
from pathlib import Path

from bench._common import Row
from bench.image import FramePusher, HealthWatcher, SwitchTimer, switch_rows
from image_build.build import BuiltBundle
from image_build.disk import install_in_root
from image_build.systemd_root import SystemdRoot, make_root

__all__ = ["systemd_switch_rows"]

_SWITCH = """
from pathlib import Path
from image_build.layout import Layout
from image_build.systemd_service import SystemdService
layout = Layout(Path("/"))
layout.switch_to(layout.other(layout.current_slot()))
outcome = SystemdService(layout).hand_over(300.0)
raise SystemExit(0 if outcome.healthy else outcome.why)
"""


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    tools = [tool for tool in ("mmdebstrap", "unshare", "nsenter") if not shutil.which(tool)]
    return f"needs {', '.join(tools)}" if tools else None


def _wait_healthy(url: str, box: SystemdRoot, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"systemd root: not healthy: {box.run('journalctl', '-n', '40').stdout}")


def _checked(box: SystemdRoot, *argv: str) -> None:
    result = box.run(*argv, timeout_s=900)
    if result.returncode != 0:
        raise SystemExit(f"systemd root: {' '.join(argv[:4])} failed: {result.stderr[-2000:]}")


def systemd_switch_rows(
    work: Path,
    first: BuiltBundle,
    newer: BuiltBundle,
    trust: Path,
    url: str,
    command: str,
    rounds: int,
) -> list[Row]:
    why_not = _missing()
    if why_not is not None:
        print(f"switch under systemd: not measured ({why_not})")
        return []
    rootfs = work / "systemd-root"
    make_root(rootfs)
    install_in_root(rootfs, first.path, trust)
    shutil.copyfile(newer.path, rootfs / "root" / newer.path.name)
    box = SystemdRoot(rootfs)
    box.boot()
    health, frames = HealthWatcher(url), FramePusher(url.removesuffix("/healthz"))
    try:
        _wait_healthy(url, box)
        for watcher in (health, frames):
            watcher.start()
        timer = SwitchTimer(health, frames)
        time.sleep(1.0)
        yardlink = "/opt/yardlink/current/venv/bin/yardlink"
        install_gaps = timer.measure(
            lambda: _checked(box, yardlink, "image", "install", f"/root/{newer.path.name}",
                             "--root", "/", "--service", "systemd", "--health-deadline", "300")
        )  # fmt: skip
        python = "/opt/yardlink/current/venv/bin/python"
        standby, anchor = [install_gaps], []
        for _ in range(rounds):  # interleaved A/B on the two installed slots
            anchor.append(timer.measure(lambda: _restart(box)))
            standby.append(timer.measure(lambda: _checked(box, python, "-c", _SWITCH)))
        for watcher in (health, frames):
            watcher.stop_event.set()
            watcher.join()
    finally:
        box.stop()
    print("under systemd (healthz s, frames s): standby", standby, "restart", anchor)
    return switch_rows(" under systemd", standby, "systemctl restart", anchor, command)


def _restart(box: SystemdRoot) -> None:
    current = (box.rootfs / "opt" / "yardlink" / "current").readlink().name
    _checked(box, "systemctl", "restart", f"yardlink@{current}.service")
