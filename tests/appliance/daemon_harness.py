"""A real daemon (real models, real outbox, real HTTP on a loopback port) for tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.config import SiteConfig, parse_config
from appliance.daemon import Daemon
from sync.outbox import Outbox
from sync.protocol import Stream

REPO = Path(__file__).resolve().parents[2]
TOKEN = "technician-token-for-tests-7Kq2xW9fRm4p"  # 32+ characters, as the config asks


def site_config(tmp_path: Path, **sections: dict[str, Any]) -> SiteConfig:
    data: dict[str, Any] = {
        "version": 1,
        "site": {
            "device_id": "gate-01",
            "site_id": "depot-test",
            "data_dir": str(tmp_path / "var"),
        },
        "outbox": {"path": str(tmp_path / "var" / "outbox")},
        "local_api": {"port": 0, "technician_token": TOKEN, "max_frame_bytes": 4 << 20},
        "sources": {"cameras": [{"id": "gate-in"}, {"id": "gate-out"}], "queue_bound": 64},
        "telemetry": {"interval_s": 3600},
        "models_dir": str(REPO / "models"),
    }
    data.update(sections)
    return parse_config(data, environ={})


def write_gate_config(tmp_path: Path, *, push_mode: str | None = None) -> Path:
    """A site.toml for a real ``yardlink appliance run`` process: the repository's
    models, one camera ``gate-in``, the local API on a free port."""
    var = tmp_path / "var"
    push = f'push_mode = "{push_mode}"\n' if push_mode else ""
    text = f"""
version = 1
models_dir = "{REPO / "models"}"
[site]
device_id = "gate-01"
site_id = "depot-test"
data_dir = "{var}"
[outbox]
path = "{var / "outbox"}"
[local_api]
port = 0
{push}technician_token = "{TOKEN}"
[sources]
queue_bound = 64
[[sources.cameras]]
id = "gate-in"
"""
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    return path


def base_url(daemon: Daemon) -> str:
    return daemon.api_url


async def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


async def read_events(outbox_path: Path) -> list[dict[str, Any]]:
    """Every events record in a closed outbox, decoded."""
    outbox = Outbox.open(outbox_path)
    try:
        records: list[dict[str, Any]] = []
        after = 0
        while batch := outbox.read(Stream.EVENTS, after):
            records += [json.loads(r.payload) for r in batch]
            after = batch[-1].seq
        return records
    finally:
        await outbox.close()
