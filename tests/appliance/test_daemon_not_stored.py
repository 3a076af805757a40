"""When the outbox refuses a frame's results (full after the bounded wait, or the disk full):
a pushed frame (already answered 202) is lost, but counted per camera and reason in
/v1/status, telemetry and /metrics, and logged once; a spool frame stays in the spool and
the spool waits before reading again, instead of re-running the models at every scan."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from appliance.config import SiteConfig
from appliance.daemon import Daemon
from appliance.inference.results import TaskResult
from appliance.sources.synthetic import SyntheticYardCamera
from sync.errors import OutboxFull
from sync.outbox import Outbox
from sync.protocol import Stream
from sync.settings import OutboxSettings
from tests.appliance.daemon_harness import TOKEN, base_url, site_config, wait_for

AUTH = {"Authorization": f"Bearer {TOKEN}"}


class CountingTask:
    """Stands in for gate_ocr: no model, counts its runs."""

    def __init__(self) -> None:
        self.name = "gate_ocr"
        self.model_name = "fake-ocr"
        self.model_version = "1"
        self.runs = 0

    def run(self, image_bgr: np.ndarray[Any, Any]) -> TaskResult:
        self.runs += 1
        return TaskResult(self.name, self.model_name, "1", [], 1.0)


@pytest.fixture
def task() -> CountingTask:
    return CountingTask()


def _daemon(config: SiteConfig, task: CountingTask) -> Daemon:
    """A daemon whose only task is ``task`` (no model loaded)."""
    return Daemon(config, task_loader=lambda *args: ({"gate_ocr": task}, {}))


async def _fill_to_the_cap(path: Path) -> None:
    """Events records (never evicted) up to a 1 MiB cap, leaving no room for another."""
    outbox = Outbox.open(
        path, OutboxSettings(max_bytes=1 << 20, backpressure_wait_s=0, min_free_disk_bytes=0)
    )
    try:
        for size in (200_000, 20_000, 2_000, 200, 20):
            while True:
                try:
                    await outbox.append(Stream.EVENTS, b"x" * size)
                except OutboxFull:
                    break
    finally:
        await outbox.close()


def _full_outbox(tmp_path: Path) -> dict[str, Any]:
    return {
        "path": str(tmp_path / "var" / "outbox"),
        "max_bytes": 1 << 20,
        "backpressure_wait_s": 0,
        "min_free_disk_bytes": 0,
    }


def _disk_full_outbox(tmp_path: Path) -> dict[str, Any]:
    return {"path": str(tmp_path / "var" / "outbox"), "min_free_disk_bytes": 1 << 62}


@pytest.mark.parametrize(
    ("outbox_section", "reason"),
    [(_full_outbox, "OutboxFull"), (_disk_full_outbox, "OutboxDiskFull")],
)
async def test_a_pushed_frame_the_outbox_refuses_is_counted_per_camera_and_logged_once(
    tmp_path: Path,
    task: CountingTask,
    caplog: pytest.LogCaptureFixture,
    outbox_section: Callable[[Path], dict[str, Any]],
    reason: str,
) -> None:
    queued = {"port": 0, "technician_token": TOKEN, "push_mode": "queued"}  # answered 202
    config = site_config(tmp_path, outbox=outbox_section(tmp_path), local_api=queued)
    if reason == "OutboxFull":
        await _fill_to_the_cap(Path(config.outbox.path))
    daemon = _daemon(config, task)
    await daemon.start()
    try:
        with caplog.at_level(logging.WARNING, logger="appliance.intake"):
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"{base_url(daemon)}/v1/frames?camera=gate-in",
                    data=SyntheticYardCamera(3).frame(0).encode(),
                    headers={**AUTH, "Content-Type": "image/jpeg"},
                ) as resp:
                    assert resp.status == 202  # queued: the answer does not wait for the outbox
                await wait_for(lambda: bool(daemon.telemetry.frames_not_stored), timeout=30)
                async with http.get(f"{base_url(daemon)}/v1/status", headers=AUTH) as resp:
                    status = await resp.json()
                async with http.get(f"{base_url(daemon)}/metrics", headers=AUTH) as resp:
                    metrics = await resp.text()
            telemetry = daemon.telemetry.snapshot()  # the body of the next telemetry record
    finally:
        await daemon.stop()
    assert task.runs == 1
    assert status["frames_not_stored"] == {"gate-in": {reason: 1}}
    assert telemetry["frames_not_stored"] == {"gate-in": {reason: 1}}
    assert f'yardlink_frames_not_stored_total{{camera="gate-in",reason="{reason}"}} 1.0' in metrics
    lost = [r for r in caplog.records if "lost after it was queued" in r.getMessage()]
    assert len(lost) == 1
    assert getattr(lost[0], "camera", None) == "gate-in"
    assert getattr(lost[0], "reason", None) == reason
    assert f"{reason}: " in lost[0].getMessage()
    assert not [r for r in caplog.records if r.getMessage() == "frame processing failed"]


async def test_a_spool_file_the_outbox_refuses_stays_and_is_not_read_again_at_every_scan(
    tmp_path: Path, task: CountingTask, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool"
    (spool / "gate-in").mkdir(parents=True)
    waiting = spool / "gate-in" / "frame-0001.jpg"
    waiting.write_bytes(SyntheticYardCamera(5).frame(0).encode())
    config = site_config(
        tmp_path,
        outbox=_disk_full_outbox(tmp_path),
        sources={
            "cameras": [{"id": "gate-in"}],
            "spool_dir": str(spool),
            "spool_poll_s": 0.01,
            "spool_retry_initial_s": 3600,  # the first wait outlasts the test
            "spool_retry_max_s": 3600,
        },
    )
    daemon = _daemon(config, task)
    await daemon.start()
    try:
        assert daemon.spool is not None
        scans = 0
        scan_once = daemon.spool.scan_once

        async def counted_scan() -> int:
            nonlocal scans
            scans += 1
            return await scan_once()

        daemon.spool.scan_once = counted_scan  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING, logger="appliance.intake"):
            await wait_for(lambda: bool(daemon.telemetry.spool_retries), timeout=30)
            after_failure = scans
            await wait_for(lambda: scans >= after_failure + 10)  # ten more scans
        status = daemon.status()
    finally:
        await daemon.stop()
    assert task.runs == 1  # the model ran once, not once per scan
    assert waiting.exists()  # never dropped: read again once the wait is over
    assert not list((spool / "processed").rglob("*.jpg"))
    assert status["frames_not_stored"] == {}  # not lost
    spool_status = status["spool"]
    assert spool_status["retries"] == {"gate-in": {"OutboxDiskFull": 1}}
    assert spool_status["retry_in_s"] > 3000
    assert spool_status["failures_in_a_row"] == 1
    assert spool_status["last_error"].startswith("OutboxDiskFull: ")
    warnings = [r for r in caplog.records if "stays in the spool" in r.getMessage()]
    assert len(warnings) == 1 and getattr(warnings[0], "camera", None) == "gate-in"
