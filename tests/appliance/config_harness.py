"""What the ``site.toml`` tests share: the shipped example, a minimal config, problem lists."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from appliance.config import parse_config
from appliance.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "site.toml"
MINIMAL = {"version": 1, "site": {"device_id": "gate-01", "site_id": "depot-north"}}


def config_problems(data: dict[str, object], environ: Mapping[str, str] | None = None) -> list[str]:
    """The problem lines of the ConfigError that ``data`` must raise."""
    with pytest.raises(ConfigError) as caught:
        parse_config(data, source="site.toml", environ=environ or {})
    header, *lines = str(caught.value).splitlines()
    assert header == f"site.toml: {len(lines)} problem(s)"
    return [line.strip() for line in lines]


def yardlink_cli(
    *args: str, cwd: Path = REPO, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``yardlink ARGS`` in a child process (this interpreter), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "yardlink.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def check_config(
    path: Path, *extra: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``yardlink appliance check-config`` in a child process, from the repository root."""
    environ = {"PATH": "/usr/bin:/bin", "YARDLINK_LOCAL_API__PORT": "9001", **(env or {})}
    return yardlink_cli("appliance", "check-config", str(path), *extra, env=environ)
