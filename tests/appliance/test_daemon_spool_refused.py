"""A spool frame whose records the outbox refuses for good (``RecordRejected``: reading the
file again makes the same records) goes to failed/ with a ``.why`` note, is counted and
logged once, and does not hold back the other files; a refusal that passes (``OutboxFull``)
keeps the file for a retry after the wait, and the frame is then stored once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from prometheus_client import generate_latest

from appliance.inference.results import Detection, TaskResult
from sync.errors import OutboxFull
from sync.outbox import Outbox
from sync.protocol import Stream
from sync.settings import OutboxSettings
from tests.appliance.daemon_harness import wait_for
from tests.appliance.spool_harness import (
    QuickTask,
    drop_frame,
    fetch_status,
    running,
    spool_config,
    stored_tasks,
)

_MAX_RECORD_BYTES = 4096


class BulkyOnBlackTask(QuickTask):
    """On an all-black frame, a result larger than the outbox takes in one record, every
    time (as a real model would: the same frame gives the same result)."""

    def run(self, image_bgr: np.ndarray[Any, Any]) -> TaskResult:
        result = super().run(image_bgr)
        if int(image_bgr.max()) > 16:
            return result
        bulky = [Detection("container_code", "X" * 100, 0.9, True, (0, 0, 1, 1))] * 100
        return TaskResult(self.name, self.model_name, "1", bulky, 1.0)


def _black_jpeg() -> bytes:
    ok, encoded = cv2.imencode(".jpg", np.zeros((480, 640, 3), np.uint8))
    assert ok
    return bytes(encoded)


async def test_a_frame_refused_for_good_goes_to_failed_and_does_not_hold_back_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    quick, bulky = QuickTask("gate_ocr"), BulkyOnBlackTask("container_ocr")
    spool = tmp_path / "spool"
    refused = drop_frame(spool, data=_black_jpeg())
    # a retry wait that outlasts the test: a file held back behind the refused one times out
    config = spool_config(tmp_path, spool, {"max_record_bytes": _MAX_RECORD_BYTES}, 3600)
    failed = spool / "failed" / "gate-in" / refused.name
    processed = spool / "processed" / "gate-in" / "frame-0002.jpg"
    async with running(config, quick, bulky) as daemon:
        with caplog.at_level(logging.WARNING, logger="appliance.intake"):
            await wait_for(failed.exists, timeout=30)
            drop_frame(spool, "frame-0002.jpg")
            await wait_for(processed.exists, timeout=10)
            status = await fetch_status(daemon)
            telemetry = daemon.telemetry.snapshot()
            metrics = generate_latest(daemon.registry).decode()
    assert not refused.exists()
    assert 'yardlink_spool_refused_total{camera="gate-in",reason="RecordRejected"} 1.0' in metrics
    assert bulky.runs == 2 and quick.runs == 2  # the refused frame's models ran once
    why = failed.with_name(failed.name + ".why").read_text()
    assert "RecordRejected" in why and f"exceeds {_MAX_RECORD_BYTES}" in why
    spool_status = status["spool"]
    assert spool_status["refused"] == {"gate-in": {"RecordRejected": 1}}
    assert spool_status["retries"] == {}
    assert spool_status["retry_in_s"] is None  # the spool did not wait
    assert telemetry["spool_refused"] == {"gate-in": {"RecordRejected": 1}}
    lines = [r for r in caplog.records if "refused for good" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR
    assert getattr(lines[0], "camera", None) == "gate-in"
    assert "failed/" in lines[0].getMessage()
    # none of the refused frame's records is stored (one atomic call), the next frame's are
    assert await stored_tasks(Path(config.outbox.path)) == {"gate_ocr": 1, "container_ocr": 1}


async def _fill_to_the_cap(path: Path) -> int:
    """Events records (never evicted) up to a 1 MiB cap; returns the last seq."""
    outbox = Outbox.open(
        path, OutboxSettings(max_bytes=1 << 20, backpressure_wait_s=0, min_free_disk_bytes=0)
    )
    last = 0
    try:
        for size in (200_000, 20_000, 2_000, 200, 20):
            while True:
                try:
                    last = await outbox.append(Stream.EVENTS, b"x" * size)
                except OutboxFull:
                    break
    finally:
        await outbox.close()
    return last


async def test_a_frame_refused_by_a_full_outbox_stays_and_is_stored_once_when_there_is_room(
    tmp_path: Path,
) -> None:
    quick, other = QuickTask("gate_ocr"), QuickTask("container_ocr")
    spool = tmp_path / "spool"
    waiting = drop_frame(spool)
    outbox = {"max_bytes": 1 << 20, "backpressure_wait_s": 0}
    config = spool_config(tmp_path, spool, outbox, 0.05)
    filler_seq = await _fill_to_the_cap(Path(config.outbox.path))
    processed = spool / "processed" / "gate-in" / waiting.name
    async with running(config, quick, other) as daemon:
        await wait_for(lambda: bool(daemon.telemetry.spool_retries), timeout=30)
        assert waiting.exists() and not list((spool / "failed").rglob("*.jpg"))
        assert daemon.outbox is not None
        await daemon.outbox.ack(Stream.EVENTS, filler_seq)  # the cloud took the filler
        await wait_for(processed.exists, timeout=30)
        status = daemon.status()
    assert quick.runs >= 2 and other.runs == quick.runs  # refused at least once
    assert status["spool"]["refused"] == {}
    assert set(status["spool"]["retries"]["gate-in"]) == {"OutboxFull"}
    assert await stored_tasks(Path(config.outbox.path)) == {"gate_ocr": 1, "container_ocr": 1}


async def test_a_frame_refused_for_good_that_failed_does_not_take_waits_like_any_refusal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bulky = BulkyOnBlackTask("container_ocr")
    spool = tmp_path / "spool"
    refused = drop_frame(spool, data=_black_jpeg())
    (spool / "failed").mkdir()
    (spool / "failed" / "gate-in").write_text("not a directory")  # the move fails
    config = spool_config(tmp_path, spool, {"max_record_bytes": _MAX_RECORD_BYTES}, 3600)
    async with running(config, bulky) as daemon:
        with caplog.at_level(logging.WARNING, logger="appliance.intake"):
            await wait_for(lambda: bool(daemon.telemetry.spool_retries), timeout=30)
        status = daemon.status()
    assert refused.exists() and bulky.runs == 1  # stays, not read again before the wait
    assert status["spool"]["retries"] == {"gate-in": {"RecordRejected": 1}}
    assert status["spool"]["refused"] == {}
    assert status["spool"]["retry_in_s"] > 3000
    assert [r for r in caplog.records if "cannot be moved to failed/" in r.getMessage()]
