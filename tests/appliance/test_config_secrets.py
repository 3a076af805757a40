"""Secrets in ``site.toml``: given as 0600 files, held as SecretStr, never printed."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from appliance.config import parse_config
from appliance.errors import ConfigError
from appliance.privacy.tokens import load_plate_key
from tests.appliance.config_harness import EXAMPLE, MINIMAL, check_config, config_problems

TECHNICIAN = "Xk3Jq9-VfT2pLx_8ZmB4wYc7RdN1sHe6G"
PLATE = "plate-key-Qm7Zt2Lw9Rk4Vx8c"
DEVICE = "dev-token-Hq4Zr8Wm2Kx7Lp9Tn3Vb"


def _secret_file(tmp_path: Path, name: str, content: str, mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(content + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_secrets_are_read_from_owner_only_files(tmp_path: Path, mode: int) -> None:
    technician = _secret_file(tmp_path, "technician.token", TECHNICIAN, mode)
    plate = _secret_file(tmp_path, "plate.secret", PLATE, mode)
    device = _secret_file(tmp_path, "sync.token", DEVICE, mode)
    data = dict(
        MINIMAL,
        local_api={"host": "0.0.0.0", "technician_token_file": str(technician)},
        privacy={"plate_secret_file": str(plate)},
        sync={"cloud_url": "https://ingest.example.net", "token_file": str(device)},
    )
    config = parse_config(data, environ={})
    assert config.sync.token is not None
    assert config.sync.token.get_secret_value() == DEVICE
    assert DEVICE not in repr(config) and DEVICE not in str(config.model_dump())
    assert config.local_api.technician_token is not None
    assert config.local_api.technician_token.get_secret_value() == TECHNICIAN  # newline gone
    assert config.privacy.plate_secret is not None
    assert config.privacy.plate_secret.get_secret_value() == PLATE
    assert TECHNICIAN not in repr(config) and PLATE not in repr(config)
    assert TECHNICIAN not in str(config.model_dump()) and PLATE not in str(config.model_dump())


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606])
def test_a_file_others_may_read_or_write_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = _secret_file(tmp_path, "technician.token", TECHNICIAN, mode)
    [problem] = config_problems(dict(MINIMAL, local_api={"technician_token_file": str(path)}))
    assert problem.startswith(f"local_api: technician_token_file: {path}: mode 0")
    assert f"run: chmod 600 {path}" in problem
    assert TECHNICIAN not in problem


def test_a_missing_empty_or_odd_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.token"
    empty = _secret_file(tmp_path, "empty.token", "  ")
    cases = {
        str(missing): "no such file",
        str(empty): "the file is empty",
        str(tmp_path): "not a regular file",
    }
    for path, why in cases.items():
        [problem] = config_problems(dict(MINIMAL, privacy={"plate_secret_file": path}))
        assert problem == f"privacy: plate_secret_file: {path}: {why}"


def test_inline_and_file_together_is_one_clear_problem(tmp_path: Path) -> None:
    path = _secret_file(tmp_path, "technician.token", TECHNICIAN)
    local_api = {"technician_token": TECHNICIAN, "technician_token_file": str(path)}
    [problem] = config_problems(dict(MINIMAL, local_api=local_api))
    assert "set technician_token or technician_token_file, not both" in problem
    assert TECHNICIAN not in problem


def test_a_weak_token_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = _secret_file(tmp_path, "technician.token", "change-me-technician-token")
    [problem] = config_problems(dict(MINIMAL, local_api={"technician_token_file": str(path)}))
    assert problem.startswith(f"local_api.technician_token: the token in {path} is a placeholder")


def test_a_refused_inline_secret_is_not_echoed() -> None:
    [problem] = config_problems(dict(MINIMAL, privacy={"plate_secret": "short-secret"}))
    assert problem.startswith("privacy.plate_secret: Value should have at least 16")
    assert "short-secret" not in problem


def test_the_file_can_come_from_the_environment_as_with_systemd_credentials(
    tmp_path: Path,
) -> None:
    """``Environment=YARDLINK_LOCAL_API__TECHNICIAN_TOKEN_FILE=%d/technician.token``."""
    path = _secret_file(tmp_path, "technician.token", TECHNICIAN, 0o644)
    environ = {"YARDLINK_LOCAL_API__TECHNICIAN_TOKEN_FILE": str(path)}
    [problem] = config_problems(dict(MINIMAL), environ)
    assert "chmod 600" in problem
    assert problem.endswith("(from YARDLINK_LOCAL_API__TECHNICIAN_TOKEN_FILE)")
    path.chmod(0o600)
    token = parse_config(dict(MINIMAL), environ=environ).local_api.technician_token
    assert token is not None and token.get_secret_value() == TECHNICIAN


def test_check_config_json_masks_every_secret(tmp_path: Path) -> None:
    technician = _secret_file(tmp_path, "technician.token", TECHNICIAN)
    site = tmp_path / "site.toml"
    site.write_text(
        EXAMPLE.read_text(encoding="utf-8")
        .replace("[local_api]\n", f'[local_api]\ntechnician_token_file = "{technician}"\n')
        .replace("[privacy]\n", f'[privacy]\nplate_secret = "{PLATE}"\n')
        .replace("[sync]\n", f'[sync]\ntoken = "{DEVICE}"\n'),
        encoding="utf-8",
    )
    result = check_config(site, "--json")
    assert result.returncode == 0, result.stderr
    assert TECHNICIAN not in result.stdout and PLATE not in result.stdout
    assert DEVICE not in result.stdout
    shown = json.loads(result.stdout)
    assert shown["local_api"]["technician_token"] == "**********"
    assert shown["local_api"]["technician_token_file"] == str(technician)  # where it came from
    assert shown["privacy"]["plate_secret"] == "**********"
    assert shown["sync"]["token"] == "**********"
    text = check_config(site)
    assert text.returncode == 0 and TECHNICIAN not in text.stdout + text.stderr


def test_a_loose_file_stops_check_config_with_one_line(tmp_path: Path) -> None:
    technician = _secret_file(tmp_path, "technician.token", TECHNICIAN, 0o644)
    site = tmp_path / "site.toml"
    site.write_text(
        EXAMPLE.read_text(encoding="utf-8").replace(
            "[local_api]\n", f'[local_api]\ntechnician_token_file = "{technician}"\n'
        ),
        encoding="utf-8",
    )
    result = check_config(site)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"chmod 600 {technician}" in result.stderr
    assert TECHNICIAN not in result.stderr
    assert os.stat(technician).st_mode & 0o777 == 0o644  # we say so; we never chmod for you


def test_the_sync_token_file_is_checked_like_the_others(tmp_path: Path) -> None:
    path = _secret_file(tmp_path, "sync.token", DEVICE, 0o640)
    [problem] = config_problems(dict(MINIMAL, sync={"token_file": str(path)}))
    assert problem == (
        f"sync: token_file: {path}: mode 0640 lets other users read or change the secret;"
        f" run: chmod 600 {path}"
    )


def test_a_plate_key_file_others_may_read_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "plate.key"
    made = load_plate_key(None, key_file)  # created 0600 when missing
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_plate_key(None, key_file) == made
    key_file.chmod(0o644)
    with pytest.raises(ConfigError, match=f"mode 0644 .* run: chmod 600 {key_file}"):
        load_plate_key(None, key_file)
