"""``yardlink appliance ...`` with bad input: one ``error:`` line on stderr, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.appliance.daemon_harness import REPO


def _yardlink(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "yardlink.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def _site_toml(tmp_path: Path, *, data_dir: Path, port: int = 0) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(
        f"""
version = 1
models_dir = "{REPO / "models"}"
[site]
device_id = "gate-01"
site_id = "depot-test"
data_dir = "{data_dir}"
[outbox]
path = "{data_dir / "outbox"}"
[local_api]
port = {port}
""",
        encoding="utf-8",
    )
    return path


def _assert_one_clear_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    for word in words:
        assert word in errors[0], errors[0]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["check-config", "{tmp}/missing.toml"], ["no such file"]),
        (["check-config", "{tmp}"], ["cannot read"]),
        (["run", "--config", "{tmp}/missing.toml"], ["no such file"]),
    ],
)
def test_check_config_and_run_refuse_a_missing_or_unreadable_file(
    tmp_path: Path, args: list[str], words: list[str]
) -> None:
    argv = [arg.format(tmp=tmp_path) for arg in args]
    _assert_one_clear_error(_yardlink("appliance", *argv, cwd=tmp_path), *words)


def test_run_with_a_data_dir_that_cannot_be_created_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    config = _site_toml(tmp_path, data_dir=blocker / "var")
    result = _yardlink("appliance", "run", "--config", str(config), cwd=tmp_path)
    _assert_one_clear_error(result, "cannot start", str(blocker))


def test_run_on_a_port_in_use_says_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _site_toml(tmp_path, data_dir=tmp_path / "var", port=port)
        result = _yardlink("appliance", "run", "--config", str(config), cwd=tmp_path)
    _assert_one_clear_error(result, "cannot start", "address already in use")
