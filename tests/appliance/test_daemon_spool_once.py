"""A spool frame's records reach the outbox once, whatever happens between the first read
of its file and the file's move to processed/: processed/ refusing the file (also across a
restart), or its sampled copy not stored (counted per camera).  A frame the outbox refuses
(for good or for now): tests/appliance/test_daemon_spool_refused.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from appliance.config import SiteConfig
from appliance.daemon import Daemon
from tests.appliance.daemon_harness import read_events, wait_for
from tests.appliance.spool_harness import (
    FRAME,
    QuickTask,
    drop_frame,
    fetch_status,
    running,
    spool_config,
    stored_tasks,
)


async def test_a_stored_frame_processed_refuses_is_not_read_again_even_after_a_restart(
    tmp_path: Path,
) -> None:
    quick = QuickTask("gate_ocr")
    spool = tmp_path / "spool"
    waiting = drop_frame(spool)
    (spool / "processed").mkdir()
    (spool / "processed" / "gate-in").write_text("not a directory")  # the move fails
    config = spool_config(tmp_path, spool)
    for _ in range(2):  # and once more after a restart
        async with running(config, quick):
            await wait_for(lambda: quick.runs >= 1, timeout=30)
            await asyncio.sleep(0.5)  # fifty more scans
        assert waiting.exists()
    assert quick.runs == 1
    events = await read_events(Path(config.outbox.path))
    assert [e["task"] for e in events] == ["gate_ocr"]
    # processed/ takes files again: the file is moved, still not read again
    (spool / "processed" / "gate-in").unlink()
    async with running(config, quick):
        await wait_for(lambda: (spool / "processed" / "gate-in" / waiting.name).exists())
    assert not waiting.exists() and quick.runs == 1
    assert len(await read_events(Path(config.outbox.path))) == 1


@asynccontextmanager
async def _sample_not_stored(
    tmp_path: Path, quick: QuickTask
) -> AsyncIterator[tuple[SiteConfig, Daemon]]:
    """A daemon (``quick`` and a face task, every frame sampled, no original kept) whose
    day key is damaged, running until one spool frame is moved to processed/."""
    spool = tmp_path / "spool"
    drop_frame(spool)
    keys = tmp_path / "var" / "blob-keys"
    keys.mkdir(parents=True)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    (keys / f"{today}.key").write_bytes(b"cut")  # damaged: the blurred copy cannot be stored
    config = spool_config(
        tmp_path, spool, sampling={"every_n_frames": 1}, privacy={"keep_raw_frames": False}
    )
    processed = spool / "processed" / "gate-in" / FRAME
    async with running(config, quick, QuickTask("face_anonymize")) as daemon:
        await wait_for(processed.exists, timeout=30)
        yield config, daemon


async def test_a_frame_whose_sample_cannot_be_stored_is_done_its_records_stored_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The sampled copy comes after the events records (another outbox class): its failure
    costs the sample, and the file is not read again to store the records twice."""
    quick = QuickTask("gate_ocr")
    async with _sample_not_stored(tmp_path, quick) as (config, _):
        await asyncio.sleep(0.3)
    assert quick.runs == 1
    assert await stored_tasks(Path(config.outbox.path)) == {"gate_ocr": 1, "face_anonymize": 1}
    assert [r for r in caplog.records if "sampled frame not stored" in r.getMessage()]


async def test_a_sample_that_cannot_be_stored_is_counted_per_camera_for_the_technician(
    tmp_path: Path,
) -> None:
    async with _sample_not_stored(tmp_path, QuickTask("gate_ocr")) as (_, daemon):
        status = await fetch_status(daemon)
        telemetry = daemon.telemetry.snapshot()  # the body of the next telemetry record
    assert status["sample_store_errors"] == {"gate-in": 1}
    assert telemetry["sample_store_errors"] == {"gate-in": 1}
    assert status["raw_store_errors"] == {}  # not the original: keep_raw_frames is off
