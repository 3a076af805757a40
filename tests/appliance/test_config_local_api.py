"""``[local_api]``: no open API beyond loopback, no placeholder or short technician token."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import parse_config
from appliance.errors import ConfigError
from appliance.local_auth import MIN_TOKEN_CHARS, make_token, token_problem
from tests.appliance.config_harness import EXAMPLE, MINIMAL, check_config, config_problems

GOOD_TOKEN = "k3Jq9-VfT2pLx_8ZmB4wYc7RdN1sHe6G"  # 32 characters, 30 distinct


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.20", "gateway.local"])
def test_no_token_beyond_loopback_is_refused_and_says_how_to_set_one(host: str) -> None:
    [problem] = config_problems(dict(MINIMAL, local_api={"host": host}))
    assert problem.startswith("local_api: host ")
    assert "no technician_token is set" in problem
    assert "yardlink appliance gen-token" in problem
    assert "technician_token_file" in problem


def test_the_override_that_opened_the_api_is_named() -> None:
    [problem] = config_problems(dict(MINIMAL), {"YARDLINK_LOCAL_API__HOST": "0.0.0.0"})
    assert problem.endswith("(from YARDLINK_LOCAL_API__HOST)")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost"])
def test_loopback_needs_no_token(host: str) -> None:
    config = parse_config(dict(MINIMAL, local_api={"host": host}), environ={})
    assert config.local_api.technician_token is None


def test_beyond_loopback_with_a_good_token_or_on_a_unix_socket_is_fine() -> None:
    with_token = {"host": "0.0.0.0", "technician_token": GOOD_TOKEN}
    config = parse_config(dict(MINIMAL, local_api=with_token), environ={})
    assert config.local_api.technician_token is not None
    assert config.local_api.technician_token.get_secret_value() == GOOD_TOKEN
    on_socket = {"host": "0.0.0.0", "unix_socket": "/run/yardlink/api.sock"}
    assert parse_config(dict(MINIMAL, local_api=on_socket), environ={}).local_api.unix_socket


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("change-me-technician-token", "a placeholder (it contains 'changeme')"),
        ("CHANGE_ME_0123456789abcdefghijklmnopqrstuv", "a placeholder"),
        ("replace-me-with-a-long-random-token-please", "a placeholder"),
        ("your-token-goes-here-0123456789abcdef", "a placeholder"),
        ("technician-token-for-tests", f"too short (26 characters, at least {MIN_TOKEN_CHARS})"),
        ("a" * 16 + "b" * 16, "too uniform"),
        ("tok with spaces" + "x1y2z3w4v5u6t7s8r9", "not sendable as a bearer token"),
    ],
)
def test_a_placeholder_short_or_unusable_token_is_refused(token: str, why: str) -> None:
    [problem] = config_problems(dict(MINIMAL, local_api={"technician_token": token}))
    assert problem.startswith("local_api.technician_token: this token is " + why)
    assert "yardlink appliance gen-token" in problem
    assert "secrets.token_urlsafe(32)" in problem
    assert token not in problem  # a refused token is still not echoed


def test_a_made_token_is_fit_and_fresh_each_time() -> None:
    tokens = {make_token() for _ in range(200)}
    assert len(tokens) == 200
    assert all(token_problem(token) is None and len(token) == 43 for token in tokens)


def test_the_shipped_example_carries_no_token_and_still_checks() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert "change-me" not in text
    assert "\ntechnician_token" not in text  # only commented: set by each site
    result = check_config(EXAMPLE)
    assert result.returncode == 0, result.stderr


def test_check_config_refuses_the_old_example_token(tmp_path: Path) -> None:
    old = tmp_path / "site.toml"
    old.write_text(
        EXAMPLE.read_text(encoding="utf-8").replace(
            "[local_api]\n", '[local_api]\ntechnician_token = "change-me-technician-token"\n'
        ),
        encoding="utf-8",
    )
    result = check_config(old)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "local_api.technician_token: this token is a placeholder" in result.stderr
    assert "change-me-technician-token" not in result.stderr


def test_parse_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        parse_config(dict(MINIMAL, local_api={"host": "0.0.0.0"}), environ={})
