"""``yardlink appliance ...`` with bad input: one ``error:`` line on stderr, never a traceback."""

from __future__ import annotations

import socket
import stat
import subprocess
from pathlib import Path

import pytest

from appliance.local_auth import token_problem
from tests.appliance.config_harness import REPO, yardlink_cli


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
    _assert_one_clear_error(yardlink_cli("appliance", *argv, cwd=tmp_path), *words)


def test_run_with_a_data_dir_that_cannot_be_created_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    config = _site_toml(tmp_path, data_dir=blocker / "var")
    result = yardlink_cli("appliance", "run", "--config", str(config), cwd=tmp_path)
    _assert_one_clear_error(result, "cannot start", str(blocker))


def test_run_on_a_port_in_use_says_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _site_toml(tmp_path, data_dir=tmp_path / "var", port=port)
        result = yardlink_cli("appliance", "run", "--config", str(config), cwd=tmp_path)
    _assert_one_clear_error(result, "cannot start", "address already in use")


def test_gen_token_prints_a_fit_token_each_time(tmp_path: Path) -> None:
    first, second = (yardlink_cli("appliance", "gen-token", cwd=tmp_path) for _ in range(2))
    assert first.returncode == second.returncode == 0, first.stderr
    tokens = [first.stdout.strip(), second.stdout.strip()]
    assert tokens[0] != tokens[1]
    assert all(len(token) == 43 and token_problem(token) is None for token in tokens)


def test_gen_token_writes_an_owner_only_file_that_the_config_takes(tmp_path: Path) -> None:
    token_file = tmp_path / "technician.token"
    made = yardlink_cli("appliance", "gen-token", "--file", str(token_file), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout == ""  # the token is not shown: it is in the file
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text(encoding="utf-8").strip()
    assert token_problem(token) is None
    config = _site_toml(tmp_path, data_dir=tmp_path / "var")
    config.write_text(
        config.read_text(encoding="utf-8")
        + f'host = "0.0.0.0"\ntechnician_token_file = "{token_file}"\n',
        encoding="utf-8",
    )
    checked = yardlink_cli("appliance", "check-config", str(config), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr

    again = yardlink_cli("appliance", "gen-token", "--file", str(token_file), cwd=tmp_path)
    _assert_one_clear_error(again, "already exists", "rotate")
    assert token_file.read_text(encoding="utf-8").strip() == token  # never overwritten


@pytest.mark.parametrize(
    ("local_api", "words"),
    [
        ('host = "0.0.0.0"\n', ["no technician_token is set", "gen-token"]),
        ('technician_token = "change-me-technician-token"\n', ["placeholder", "gen-token"]),
        ('technician_token_file = "{loose}"\n', ["chmod 600", "{loose}"]),
    ],
)
def test_run_refuses_an_unguarded_or_weak_local_api(
    tmp_path: Path, local_api: str, words: list[str]
) -> None:
    loose = tmp_path / "loose.token"
    loose.write_text("Xk3Jq9-VfT2pLx_8ZmB4wYc7RdN1sHe6G\n", encoding="utf-8")
    loose.chmod(0o644)
    config = _site_toml(tmp_path, data_dir=tmp_path / "var")
    config.write_text(
        config.read_text(encoding="utf-8") + local_api.format(loose=loose), encoding="utf-8"
    )
    result = yardlink_cli("appliance", "run", "--config", str(config), cwd=tmp_path)
    _assert_one_clear_error(result, str(config), "1 problem(s)")
    for word in words:  # the problem itself is on the line below the error: line
        assert word.format(loose=loose) in result.stderr, result.stderr
    assert not (tmp_path / "var").exists()  # refused before anything was created
