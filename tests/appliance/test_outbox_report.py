"""The outbox's figures in /v1/status and /metrics, from a real outbox."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from appliance.outbox_report import OutboxCollector, outbox_status
from sync.errors import RecordRejected
from sync.outbox import Outbox, OutboxStats
from sync.protocol import Stream
from sync.settings import OutboxSettings


async def test_status_and_metrics_show_depth_age_and_refusals(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    settings = OutboxSettings(min_free_disk_bytes=0, max_record_bytes=64)
    outbox = Outbox.open(tmp_path / "outbox", settings, clock=lambda: now[0])
    try:
        await outbox.append_many(Stream.EVENTS, [b"a" * 10, b"b" * 10])
        with pytest.raises(RecordRejected):
            await outbox.append(Stream.EVENTS, b"x" * 65)  # over max_record_bytes
        now[0] += 90.0
        status = outbox_status(outbox.stats())
        registry = CollectorRegistry()
        registry.register(OutboxCollector(outbox.stats))
        text = generate_latest(registry).decode()
    finally:
        await outbox.close()
    events = status["classes"]["events"]
    assert (events["records"], events["oldest_age_s"]) == (2, 90.0)
    assert status["classes"]["critical"] == {"records": 0, "bytes": 0, "oldest_age_s": 0.0}
    assert status["rejections"] == {"oversize": 1}
    assert status["evictions"] == {}
    assert sum(status["fsyncs"].values()) >= 1
    assert status["disk_bytes"] > 0
    assert 'yardlink_outbox_records{class="events"} 2.0' in text
    assert 'yardlink_outbox_oldest_age_seconds{class="events"} 90.0' in text
    assert 'yardlink_outbox_rejections_total{reason="oversize"} 1.0' in text
    assert f'yardlink_outbox_bytes{{class="events"}} {float(events["bytes"])}' in text


def test_no_outbox_metrics_without_an_outbox() -> None:
    def no_outbox() -> OutboxStats | None:
        return None

    registry = CollectorRegistry()
    registry.register(OutboxCollector(no_outbox))
    assert b"yardlink_outbox" not in generate_latest(registry)
