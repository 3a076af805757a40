"""A real daemon reading a spool, with stand-in tasks (no model), for the spool tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from appliance.builder import TaskLoader
from appliance.config import SiteConfig
from appliance.daemon import Daemon
from appliance.inference.results import TaskResult
from appliance.sources.synthetic import SyntheticYardCamera
from tests.appliance.daemon_harness import TOKEN, base_url, read_events, site_config

AUTH = {"Authorization": f"Bearer {TOKEN}"}
FRAME = "frame-0001.jpg"


class QuickTask:
    """No model: an empty result, counting its runs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.model_name = f"fake-{name}"
        self.model_version = "1"
        self.runs = 0

    def run(self, image_bgr: np.ndarray[Any, Any]) -> TaskResult:
        self.runs += 1
        return TaskResult(self.name, self.model_name, "1", [], 1.0)


def fixed_tasks(*tasks: QuickTask) -> TaskLoader:
    """A task loader that gives the daemon these tasks instead of the real models."""

    def load(*args: object) -> tuple[dict[str, Any], dict[str, str]]:
        return {task.name: task for task in tasks}, {}

    return load


def spool_config(
    tmp_path: Path,
    spool: Path,
    outbox: dict[str, Any] | None = None,
    retry_s: float | None = 0.05,
    **sections: Any,
) -> SiteConfig:
    """One camera (gate-in) read from ``spool``, scanned every 10 ms; the spool's retry
    wait is ``retry_s`` (None: the configured default)."""
    retry = {"spool_retry_initial_s": retry_s, "spool_retry_max_s": retry_s}
    return site_config(
        tmp_path,
        **sections,
        outbox={
            "path": str(tmp_path / "var" / "outbox"),
            "min_free_disk_bytes": 0,
            **(outbox or {}),
        },
        sources={
            "cameras": [{"id": "gate-in"}],
            "spool_dir": str(spool),
            "spool_poll_s": 0.01,
            **({} if retry_s is None else retry),
        },
    )


def drop_frame(spool: Path, name: str = FRAME, data: bytes | None = None) -> Path:
    """A file in gate-in's spool directory (by default a synthetic yard frame)."""
    (spool / "gate-in").mkdir(parents=True, exist_ok=True)
    path = spool / "gate-in" / name
    path.write_bytes(SyntheticYardCamera(5).frame(0).encode() if data is None else data)
    return path


async def stored_tasks(outbox_path: Path) -> Counter[str]:
    """How many events records each task has in a closed outbox."""
    return Counter(e["task"] for e in await read_events(outbox_path))


async def fetch_status(daemon: Daemon) -> dict[str, Any]:
    """The daemon's ``/v1/status``, as a technician reads it."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base_url(daemon)}/v1/status", headers=AUTH) as resp,
    ):
        status: dict[str, Any] = await resp.json()
    return status


@asynccontextmanager
async def running(config: SiteConfig, *tasks: QuickTask) -> AsyncIterator[Daemon]:
    """A started daemon running ``tasks`` (no model), stopped when the block ends (also
    on a failure)."""
    daemon = Daemon(config, task_loader=fixed_tasks(*tasks))
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()
