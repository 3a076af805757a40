"""The technician's bearer token: scheme case-insensitive (RFC 9110), token exact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from appliance.daemon import Daemon
from appliance.local_auth import (
    AuthVerdict,
    bearer_credentials,
    check_technician,
    is_loopback_host,
)
from tests.appliance.daemon_harness import TOKEN, base_url, site_config

SECRET = SecretStr(TOKEN)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
@pytest.mark.parametrize("spaces", [" ", "  "])
def test_the_scheme_is_case_insensitive(scheme: str, spaces: str) -> None:
    assert bearer_credentials(f"{scheme}{spaces}{TOKEN}") == TOKEN
    assert check_technician(f"{scheme}{spaces}{TOKEN}", SECRET) is AuthVerdict.ALLOWED


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", f"Basic {TOKEN}", f"Bearer{TOKEN}", f"Bearer {TOKEN} extra"],
)
def test_no_bearer_credentials_is_missing(header: str | None) -> None:
    assert bearer_credentials(header) is None
    assert check_technician(header, SECRET) is AuthVerdict.MISSING


@pytest.mark.parametrize("given_token", [TOKEN.upper(), TOKEN[:-1], TOKEN + "x", "x" * 40])
def test_the_token_itself_is_exact(given_token: str) -> None:
    assert check_technician(f"bearer {given_token}", SECRET) is AuthVerdict.WRONG


def test_without_a_configured_token_everyone_may() -> None:
    assert check_technician(None, None) is AuthVerdict.ALLOWED


@given(st.text(max_size=80))
def test_any_header_gets_a_verdict_and_only_the_token_is_allowed(header: str) -> None:
    verdict = check_technician(header, SECRET)
    assert (verdict is AuthVerdict.ALLOWED) == (bearer_credentials(header) == TOKEN)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("LOCALHOST", True), ("0.0.0.0", False), ("", False)],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    no_models = {"gate_ocr": {"enabled": False}, "face_anonymize": {"enabled": False}}
    running = Daemon(site_config(tmp_path, inference=no_models))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def test_a_real_daemon_takes_a_lowercase_scheme_and_challenges_without_one(
    daemon: Daemon,
) -> None:
    async with aiohttp.ClientSession() as http:
        for scheme in ("bearer", "BEARER", "Bearer"):
            headers = {"Authorization": f"{scheme} {TOKEN}"}
            async with http.get(base_url(daemon) + "/v1/status", headers=headers) as resp:
                assert resp.status == 200, await resp.text()
        async with http.get(base_url(daemon) + "/v1/status") as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == "Bearer"
        headers = {"Authorization": "bearer not-the-technician-token"}
        async with http.get(base_url(daemon) + "/v1/status", headers=headers) as resp:
            assert resp.status == 403
