"""Run a child that prints its promises (one line per acknowledged write), SIGKILL it
at a random moment, and return the promises it made: what the crash tests check."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["kill_while_promising"]

REPO = Path(__file__).resolve().parents[2]


def kill_while_promising(
    script: str,
    args: list[str],
    rng: random.Random,
    *,
    delay_s: tuple[float, float],
    not_promises: frozenset[str] = frozenset(),
    before_kill: Callable[[subprocess.Popen[str]], None] | None = None,
) -> list[str]:
    """Run ``python -c script *args`` from the repository; once it printed its first
    promise (a whole line, not one of ``not_promises``), call ``before_kill``, wait a
    random ``delay_s`` and SIGKILL it.  Returns its promises, in order (a line cut by
    the kill is not one)."""
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    lines: list[str] = []
    started = threading.Event()

    def collect() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            if line.endswith("\n") and line not in not_promises:
                lines.append(line)
                started.set()

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        assert started.wait(60), child.stderr.read() if child.poll() is not None else "no start"
        if before_kill is not None:
            before_kill(child)
        time.sleep(rng.uniform(*delay_s))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        reader.join(10)
        child.stderr.close()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return lines
