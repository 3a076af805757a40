"""Plumbing for the TUI tests: a real daemon (no models unless asked) syncing to the real
ingest service on loopback, and a wait that keeps the Textual pilot running."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from appliance.config import SiteConfig
from tests.appliance.daemon_harness import TOKEN, site_config
from tests.sync.ingest_server import DEVICE, SITE, RunningIngest

NO_MODELS = {"gate_ocr": {"enabled": False}, "face_anonymize": {"enabled": False}}


def daemon_config(
    tmp_path: Path,
    ingest: RunningIngest | None,
    *,
    port: int = 0,
    models: bool = False,
    **extra: Any,
) -> SiteConfig:
    sections: dict[str, Any] = {
        "site": {"device_id": DEVICE, "site_id": SITE, "data_dir": str(tmp_path / "var")},
        "local_api": {
            "port": port,
            "technician_token": TOKEN,
            "max_frame_bytes": 4 << 20,
        },
        **extra,
    }
    if ingest is not None:
        sections["sync"] = {
            "cloud_url": ingest.url,
            "token": ingest.token,
            "batch_max_age_s": 0.0,
            "handshake_interval_s": 1.0,
            "link": {"backoff_initial_s": 0.05, "backoff_max_s": 0.5},
        }
    if not models:
        sections["inference"] = NO_MODELS
    return site_config(tmp_path, **sections)


async def until(
    pilot: Pilot[Any], condition: Callable[[], bool], timeout: float = 30.0, what: str = ""
) -> None:
    """Let the app run until ``condition()`` holds (TimeoutError after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not met in {timeout} s: {what}")
        await pilot.pause(0.05)


async def sleep(pilot: Pilot[Any], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await pilot.pause(0.05)
    await asyncio.sleep(0)
