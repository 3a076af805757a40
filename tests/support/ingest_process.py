"""The real ``yardlink ingest serve`` in a subprocess, for tests that SIGKILL it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

__all__ = ["YARDLINK", "IngestProcess"]

YARDLINK = str(Path(sys.executable).parent / "yardlink")


class IngestProcess:
    """``yardlink ingest serve --port 0`` in a subprocess; the port is read from its log."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> IngestProcess:
        self.process = subprocess.Popen(
            [YARDLINK, "ingest", "serve", "--data-dir", str(self.data_dir), "--port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.process.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                raise RuntimeError("server exited before listening")
            entry = json.loads(line)
            if entry.get("msg") == "listening":
                self.url = entry["url"]
                break
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for _ in self.process.stderr:
            pass

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)
        if self.process.stderr:
            self.process.stderr.close()
