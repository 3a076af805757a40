"""A Debian root file system with its own systemd as PID 1, without a VM: for testing
the units and the A/B switch under the real service manager in seconds.

``mmdebstrap`` makes the root (Debian's packages: systemd, python3); the bundle is
installed in it as on a disk image (``image_build.disk.install_in_root``); then
``unshare`` gives systemd new PID, mount and cgroup namespaces, a fresh cgroup2
hierarchy, ``/proc``, ``/sys``, ``/run`` and ``/dev``, and ``pivot_root`` makes the
root its ``/`` (systemd's sandboxing, ``ProtectSystem=`` and the rest, needs a real
mount as ``/``, not a ``chroot``).  The network namespace is the host's, so the
appliance's port is reachable from outside.  Commands run inside with ``nsenter``.
Needs root, mmdebstrap, util-linux (unshare, nsenter) and a cgroup2-capable kernel.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from image_build.errors import BuildError

__all__ = ["PACKAGES", "SystemdRoot", "make_root"]

PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "adduser")

_BOOT = """set -eu
R=$1
mount --make-rprivate /
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=755 tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
mount --rbind /dev "$R/dev"
cd "$R"
mkdir -p .oldroot
pivot_root . .oldroot
umount -l /.oldroot
export container=yardlink-test
exec /lib/systemd/systemd --system --log-level=warning
"""


def make_root(rootfs: Path, *, suite: str = "bookworm", mirror: str | None = None) -> None:
    argv = ["mmdebstrap", "--quiet", "--mode=root", "--variant=minbase",
            f"--include={','.join(PACKAGES)}", suite, str(rootfs)]  # fmt: skip
    if mirror:
        argv.append(mirror)
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"mmdebstrap failed: {result.stderr.strip()[-2000:]}")


class SystemdRoot:
    """``rootfs`` booted: ``run`` a command inside, ``stop`` kills the whole namespace."""

    def __init__(self, rootfs: Path) -> None:
        self.rootfs = rootfs
        self._unshare: subprocess.Popen[bytes] | None = None
        self.pid = 0  # systemd's pid, as this machine sees it

    def boot(self, timeout_s: float = 120.0) -> None:
        self._unshare = subprocess.Popen(
            [
                "unshare",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount",
                "--cgroup",
                "sh",
                "-c",
                _BOOT,
                "sh",
                str(self.rootfs),
            ],  # fmt: skip
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._unshare.poll() is not None:
                raise BuildError(f"systemd in {self.rootfs} exited ({self._unshare.returncode})")
            children = Path(f"/proc/{self._unshare.pid}/task/{self._unshare.pid}/children")
            pids = children.read_text().split() if children.exists() else []
            if pids:
                self.pid = int(pids[0])
                state = self.run("systemctl", "is-system-running", timeout_s=30).stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.5)
        self.stop()
        raise BuildError(f"systemd in {self.rootfs} did not finish booting in {timeout_s:.0f} s")

    def run(self, *argv: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
        if not self.pid:
            raise BuildError("the root is not booted")
        return subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", "-p", "-r", "-w", *argv],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def stop(self) -> None:
        """Kill it (no shutdown: PID 1 of a namespace takes every process with it)."""
        if self._unshare is not None and self._unshare.poll() is None:
            self._unshare.kill()
            self._unshare.wait()
        self._unshare, self.pid = None, 0
