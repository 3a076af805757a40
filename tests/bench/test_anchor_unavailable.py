"""A benchmark whose anchor cannot run stops with the reason instead of writing ``met: null``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.tus_servers import AnchorUnavailable, node_anchor_problem, start_node_server

REPO = Path(__file__).resolve().parents[2]


def fake_tool(bin_dir: Path, name: str, prints: str) -> None:
    """A stand-in for an external program (node, npm) that prints ``prints``."""
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text(f"#!/bin/sh\necho {prints}\n")
    tool.chmod(0o755)


def run_bench(path: str, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path}
    return subprocess.run(
        [sys.executable, "-m", "bench.ingest", "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_ingest_bench_without_node_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    out = tmp_path / "ingest.json"
    done = run_bench(str(empty), out)
    assert done.returncode == 2, done.stderr
    assert "the anchor cannot run, no results written" in done.stderr
    assert "node and npm not found on PATH" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


def test_ingest_bench_with_a_node_too_old_exits_2(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "node", "v18.19.0")
    fake_tool(bin_dir, "npm", "10.0.0")
    out = tmp_path / "ingest.json"
    done = run_bench(str(bin_dir), out)
    assert done.returncode == 2, done.stderr
    assert "node 18.19 at" in done.stderr and "older than the 20.19" in done.stderr
    assert not out.exists()


def test_starting_the_anchor_without_npm_raises_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "node", "v22.1.0")
    monkeypatch.setenv("PATH", str(bin_dir))
    assert node_anchor_problem() is not None
    with pytest.raises(AnchorUnavailable, match="npm not found on PATH"):
        start_node_server(tmp_path / "data")
    assert not (tmp_path / "data").exists()  # nothing started
