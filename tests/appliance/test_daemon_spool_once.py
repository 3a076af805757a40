"""A spool frame's records reach the outbox once, whatever happens between the first read
of its file and the file's move to processed/: processed/ refusing the file (also across a
restart), or its sampled copy not stored (counted per camera).  A frame the outbox refuses
(for good or for now): tests/appliance/test_daemon_spool_refused.py."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from appliance.config import SiteConfig
from appliance.daemon import Daemon
from appliance.inference.results import TaskResult
from appliance.sources.synthetic import SyntheticYardCamera
from tests.appliance.daemon_harness import TOKEN, base_url, read_events, site_config, wait_for

AUTH = {"Authorization": f"Bearer {TOKEN}"}


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


def _use_tasks(monkeypatch: pytest.MonkeyPatch, *tasks: QuickTask) -> None:
    def build_tasks(*args: object) -> tuple[dict[str, Any], dict[str, str]]:
        return {task.name: task for task in tasks}, {}

    monkeypatch.setattr("appliance.daemon.build_tasks", build_tasks)


def _spool_config(
    tmp_path: Path, spool: Path, outbox: dict[str, Any] | None = None, **sections: Any
) -> SiteConfig:
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
            "spool_retry_initial_s": 0.05,
            "spool_retry_max_s": 0.05,
        },
    )


def _drop_one(spool: Path) -> Path:
    (spool / "gate-in").mkdir(parents=True)
    path = spool / "gate-in" / "frame-0001.jpg"
    path.write_bytes(SyntheticYardCamera(5).frame(0).encode())
    return path


async def test_a_stored_frame_processed_refuses_is_not_read_again_even_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    quick = QuickTask("gate_ocr")
    _use_tasks(monkeypatch, quick)
    spool = tmp_path / "spool"
    waiting = _drop_one(spool)
    (spool / "processed").mkdir()
    (spool / "processed" / "gate-in").write_text("not a directory")  # the move fails
    config = _spool_config(tmp_path, spool)
    for _ in range(2):  # and once more after a restart
        daemon = Daemon(config)
        await daemon.start()
        try:
            await wait_for(lambda: quick.runs >= 1, timeout=30)
            await asyncio.sleep(0.5)  # fifty more scans
        finally:
            await daemon.stop()
        assert waiting.exists()
    assert quick.runs == 1
    events = await read_events(Path(config.outbox.path))
    assert [e["task"] for e in events] == ["gate_ocr"]
    # processed/ takes files again: the file is moved, still not read again
    (spool / "processed" / "gate-in").unlink()
    daemon = Daemon(config)
    await daemon.start()
    try:
        await wait_for(lambda: (spool / "processed" / "gate-in" / waiting.name).exists())
    finally:
        await daemon.stop()
    assert not waiting.exists() and quick.runs == 1
    assert len(await read_events(Path(config.outbox.path))) == 1


async def test_a_frame_whose_sample_cannot_be_stored_is_done_its_records_stored_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The sampled copy comes after the events records (another outbox class): its failure
    costs the sample, and the file is not read again to store the records twice."""
    quick, faces = QuickTask("gate_ocr"), QuickTask("face_anonymize")
    _use_tasks(monkeypatch, quick, faces)
    spool = tmp_path / "spool"
    _drop_one(spool)
    keys = tmp_path / "var" / "blob-keys"
    keys.mkdir(parents=True)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    (keys / f"{today}.key").write_bytes(b"cut")  # damaged: the blurred copy cannot be stored
    config = _spool_config(
        tmp_path, spool, sampling={"every_n_frames": 1}, privacy={"keep_raw_frames": False}
    )
    processed = spool / "processed" / "gate-in" / "frame-0001.jpg"
    daemon = Daemon(config)
    await daemon.start()
    try:
        await wait_for(processed.exists, timeout=30)
        await asyncio.sleep(0.3)
    finally:
        await daemon.stop()
    assert quick.runs == 1
    events = await read_events(Path(config.outbox.path))
    assert Counter(e["task"] for e in events) == {"gate_ocr": 1, "face_anonymize": 1}
    assert [r for r in caplog.records if "sampled frame not stored" in r.getMessage()]


async def test_a_sample_that_cannot_be_stored_is_counted_per_camera_for_the_technician(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    quick, faces = QuickTask("gate_ocr"), QuickTask("face_anonymize")
    _use_tasks(monkeypatch, quick, faces)
    spool = tmp_path / "spool"
    _drop_one(spool)
    keys = tmp_path / "var" / "blob-keys"
    keys.mkdir(parents=True)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    (keys / f"{today}.key").write_bytes(b"cut")  # damaged: the blurred copy cannot be stored
    config = _spool_config(
        tmp_path, spool, sampling={"every_n_frames": 1}, privacy={"keep_raw_frames": False}
    )
    processed = spool / "processed" / "gate-in" / "frame-0001.jpg"
    daemon = Daemon(config)
    await daemon.start()
    try:
        await wait_for(processed.exists, timeout=30)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{base_url(daemon)}/v1/status", headers=AUTH) as resp,
        ):
            status = await resp.json()
        telemetry = daemon.telemetry.snapshot()  # the body of the next telemetry record
    finally:
        await daemon.stop()
    assert status["sample_store_errors"] == {"gate-in": 1}
    assert telemetry["sample_store_errors"] == {"gate-in": 1}
    assert status["raw_store_errors"] == {}  # not the original: keep_raw_frames is off
