"""``Daemon.stop()`` is safe at any point of ``start()``: a start that fails half-way (a data
directory that cannot be made, a task loader that raises, an outbox that cannot open, a
port in use) leaves nothing running once ``stop()`` returns, and the outbox closed."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.builder import TaskLoader
from appliance.config import SiteConfig
from appliance.daemon import Daemon, NotStarted
from sync.outbox import Outbox
from tests.appliance.daemon_harness import TOKEN, site_config
from tests.appliance.spool_harness import QuickTask, fixed_tasks


def _broken_loader(*args: object) -> tuple[dict[str, Any], dict[str, str]]:
    raise RuntimeError("the task loader broke")


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def _config(tmp_path: Path, **sections: Any) -> SiteConfig:
    """Everything start() can start: a spool, a synthetic camera, a cloud (unreachable)."""
    spool = tmp_path / "spool"
    defaults: dict[str, Any] = {
        "sources": {
            "cameras": [{"id": "gate-in", "synthetic_fps": 20}],
            "spool_dir": str(spool),
            "spool_poll_s": 0.01,
        },
        "sync": {"cloud_url": "http://127.0.0.1:9", "token": "device-token-for-tests-0123456789"},
    }
    return site_config(tmp_path, **{**defaults, **sections})


async def _stop_leaves_nothing(daemon: Daemon, outbox_path: Path | None) -> None:
    await daemon.stop()
    assert not daemon.readiness.ready
    assert not daemon.accepting
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert others == [], others
    if outbox_path is not None and outbox_path.exists():
        reopened = Outbox.open(outbox_path)  # RocksDB's lock: only once the daemon closed it
        await reopened.close()


async def test_stop_before_start(tmp_path: Path) -> None:
    daemon = Daemon(_config(tmp_path), task_loader=fixed_tasks(QuickTask("gate_ocr")))
    with pytest.raises(NotStarted):
        daemon.processor  # noqa: B018 - it exists only once start() built it
    await _stop_leaves_nothing(daemon, None)


async def test_stop_after_the_data_directory_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("a file where the data directory should be")
    daemon = Daemon(_config(tmp_path), task_loader=fixed_tasks(QuickTask("gate_ocr")))
    with pytest.raises(OSError):
        await daemon.start()
    await _stop_leaves_nothing(daemon, None)


async def test_stop_after_the_task_loader_failed(tmp_path: Path) -> None:
    daemon = Daemon(_config(tmp_path), task_loader=_broken_loader)
    with pytest.raises(RuntimeError, match="task loader broke"):
        await daemon.start()
    await _stop_leaves_nothing(daemon, None)


async def test_stop_after_the_outbox_cannot_open(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("x")
    config = _config(tmp_path, outbox={"path": str(tmp_path / "not-a-dir" / "outbox")})
    loader: TaskLoader = fixed_tasks(QuickTask("gate_ocr"))
    daemon = Daemon(config, task_loader=loader)
    with pytest.raises(Exception):  # noqa: B017 - whatever the outbox raises, stop() is safe
        await daemon.start()
    assert daemon.outbox is None
    await _stop_leaves_nothing(daemon, None)


async def test_stop_after_the_api_cannot_listen(tmp_path: Path, busy_port: int) -> None:
    """The last step fails: consumers, supervised tasks, spool, synthetic camera and the
    sync engine are all running by then."""
    config = _config(tmp_path, local_api={"port": busy_port, "technician_token": TOKEN})
    daemon = Daemon(config, task_loader=fixed_tasks(QuickTask("gate_ocr")))
    with pytest.raises(OSError):
        await daemon.start()
    assert daemon.sync_engine is not None and daemon.spool is not None
    assert set(daemon.supervisor.status()) == {
        "spool",
        "synthetic-gate-in",
        "telemetry",
        "retention",
    }
    await _stop_leaves_nothing(daemon, Path(config.outbox.path))
