"""Mount the power-cut filesystem in a child process; cut the power; mount again.

``PowercutDisk(state_dir, mountpoint)`` is one disk: ``mount()`` starts
``tests.support.powercut.lazyfs`` and waits for it, ``cut()`` drops what was not
durable and unmounts (the kernel's cache of the mount goes with it), so the next
``mount()`` sees exactly what a machine would find after the power came back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from tests.support.powercut.lazyfs import CONTROL

__all__ = ["PowercutDisk", "cut_lost", "fuse_available"]

_MOUNT_TIMEOUT_S = 20.0
_REPO = Path(__file__).resolve().parents[3]


def cut_lost(report: str) -> int:
    """What a cut's report says it threw away: bytes of file data plus directory entries."""
    fields = dict(item.split("=") for item in report.split())
    return int(fields["bytes"]) + int(fields["entries"])


def fuse_available() -> str | None:
    """None when FUSE mounts can work here, else why not (for a clear failure)."""
    if not Path("/dev/fuse").exists():
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is missing (apt-get install -y fuse3)"
    return None


class PowercutDisk:
    def __init__(self, state_dir: Path, mountpoint: Path, *, seed: int = 0) -> None:
        self.state_dir = state_dir
        self.mountpoint = mountpoint
        self.seed = seed
        self.mounts = 0
        self._server: subprocess.Popen[bytes] | None = None
        mountpoint.mkdir(parents=True, exist_ok=True)

    @property
    def backing(self) -> Path:
        """The tree under the mount, on the real disk (read it only while unmounted)."""
        return self.state_dir / "tree"

    def mount(self) -> Path:
        if self._server is not None:
            raise RuntimeError("powercut disk is already mounted")
        self.mounts += 1
        self._server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.powercut.lazyfs",
                str(self.state_dir),
                str(self.mountpoint),
            ]
            + ["--seed", str(self.seed * 1000 + self.mounts)],
            stderr=subprocess.PIPE,
            cwd=_REPO,
        )
        deadline = time.monotonic() + _MOUNT_TIMEOUT_S
        while not os.path.ismount(self.mountpoint):
            if self._server.poll() is not None:
                err = self._server.stderr.read().decode() if self._server.stderr else ""
                self._server = None
                raise RuntimeError(f"powercut filesystem did not mount: {err.strip()}")
            if time.monotonic() > deadline:
                self.unmount()
                raise RuntimeError("powercut filesystem did not mount in time")
            time.sleep(0.02)
        return self.mountpoint

    def cut(self) -> str:
        """Lose every write not made durable, then unmount; returns what was lost."""
        control = self.mountpoint / CONTROL.lstrip("/")
        with control.open("r+b", buffering=0) as f:
            f.write(b"cut")
        with control.open("rb", buffering=0) as f:
            report = f.read(4096).decode()
        self.unmount()
        return report

    def unmount(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        subprocess.run(
            ["fusermount3", "-u", "-z", str(self.mountpoint)], check=False, capture_output=True
        )
        try:
            server.wait(timeout=_MOUNT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stderr is not None:
            server.stderr.close()

    def __enter__(self) -> PowercutDisk:
        self.mount()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unmount()
