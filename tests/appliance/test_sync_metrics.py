"""The link and sync state, latency in seconds and the build on a real daemon's /metrics."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from appliance.daemon import Daemon
from appliance.metrics import build_version
from appliance.sources.frames import decode_frame
from appliance.sources.synthetic import SyntheticYardCamera
from sync.protocol import Stream
from tests.appliance.daemon_harness import TOKEN, base_url, site_config, wait_for
from tests.sync.ingest_server import DEVICE, SITE, lake_seqs, running_ingest

AUTH = {"Authorization": f"Bearer {TOKEN}"}
FRAMES = 3
RAW_BUDGET = 5_000_000

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def scrape(http: aiohttp.ClientSession, daemon: Daemon) -> tuple[Samples, dict[str, str]]:
    """Every sample by (name, sorted labels), and each family's type, as Prometheus parses them."""
    async with http.get(f"{base_url(daemon)}/metrics", headers=AUTH) as resp:
        assert resp.status == 200
        text = await resp.text()
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, types


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def sync_json(http: aiohttp.ClientSession, daemon: Daemon) -> dict[str, Any]:
    async with http.get(f"{base_url(daemon)}/v1/sync", headers=AUTH) as resp:
        body: dict[str, Any] = await resp.json()
        return body


def sync_config(tmp_path: Path, cloud_url: str, token: str) -> dict[str, Any]:
    return {
        "cloud_url": cloud_url,
        "token": token,
        "batch_max_age_s": 0.0,
        "daily_budget_bytes": {"raw_sampled": RAW_BUDGET},
        "link": {"backoff_initial_s": 0.05, "backoff_max_s": 0.5},
    }


async def test_metrics_follow_the_sync_engine_against_the_real_ingest(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    cloud_dir = tmp_path / "cloud"
    started = time.time()
    async with running_ingest(cloud_dir) as ingest:
        config = site_config(
            tmp_path,
            site={"device_id": DEVICE, "site_id": SITE, "data_dir": str(tmp_path / "var")},
            sync=sync_config(tmp_path, ingest.url, ingest.token),
        )
        daemon = Daemon(config)
        await daemon.start()
        try:
            camera = SyntheticYardCamera(5)
            for frame in camera.frames(FRAMES):
                await daemon.queue_frame(
                    decode_frame("gate-in", frame.encode(), None, max_bytes=1 << 24)
                )
            await wait_for(lambda: len(lake_seqs(cloud_dir, Stream.EVENTS)) == 2 * FRAMES)
            await wait_for(lambda: daemon.outbox is not None and _events_drained(daemon))
            samples, types = await scrape(http, daemon)
            progress = await sync_json(http, daemon)
            window_ms = daemon.telemetry.latency("gate_ocr")  # the same latencies, in ms
        finally:
            await daemon.stop()
    assert one(samples, "yardlink_sync_link_up") == 1.0
    assert one(samples, "yardlink_sync_link_state", state="online") == 1.0
    assert one(samples, "yardlink_sync_link_state", state="offline") == 0.0
    assert one(samples, "yardlink_sync_running") == 1.0
    assert one(samples, "yardlink_sync_consecutive_failures") == 0.0
    events = progress["classes"]["events"]
    assert events["sent_records"] == 2 * FRAMES
    # the JSON of /v1/sync and the metrics are one snapshot's figures
    assert one(samples, "yardlink_sync_sent_bytes_total", **{"class": "events"}) == float(
        events["sent_bytes"]
    )
    assert events["sent_bytes"] > 0
    assert one(samples, "yardlink_sync_sent_records_total", **{"class": "events"}) == 2 * FRAMES
    assert types["yardlink_sync_sent_bytes"] == "counter"
    # pending per class: the outbox's gauges, drained for events
    assert one(samples, "yardlink_outbox_records", **{"class": "events"}) == 0.0
    last = one(samples, "yardlink_sync_last_success_timestamp_seconds", **{"class": "events"})
    assert started <= last <= time.time()
    assert (
        "yardlink_sync_last_success_timestamp_seconds",
        (("class", "raw_requested"),),
    ) not in samples  # nothing of that class was delivered: no sample rather than a 0
    handshake = one(samples, "yardlink_sync_last_handshake_timestamp_seconds")
    assert started <= handshake <= time.time()
    assert one(samples, "yardlink_sync_budget_left_bytes", **{"class": "raw_sampled"}) == float(
        progress["classes"]["raw_sampled"]["budget_left_bytes"]
    )
    assert 0 < progress["classes"]["raw_sampled"]["budget_left_bytes"] <= RAW_BUDGET
    assert ("yardlink_sync_budget_left_bytes", (("class", "events"),)) not in samples
    rtt = one(samples, "yardlink_sync_link_rtt_seconds")
    assert rtt == pytest.approx(progress["rtt_ms"] / 1000) and 0 < rtt < 10
    # task latency: a histogram in seconds, one observation per frame and task
    assert types["yardlink_task_latency_seconds"] == "histogram"
    count = one(samples, "yardlink_task_latency_seconds_count", task="gate_ocr")
    total = one(samples, "yardlink_task_latency_seconds_sum", task="gate_ocr")
    assert count == FRAMES
    p50_ms, p99_ms = window_ms["p50"], window_ms["p99"]
    assert p50_ms is not None and p99_ms is not None
    assert p50_ms <= total * 1000 and total / count * 1000 <= p99_ms + 0.01  # seconds, not ms
    assert one(samples, "yardlink_task_latency_seconds_bucket", task="gate_ocr", le="+Inf") == count
    assert not any(name.endswith("_ms") for name, _ in samples)
    build = [labels for name, labels in samples if name == "yardlink_build_info"]
    assert len(build) == 1 and ("version", build_version()) in build[0]
    assert build_version() != "unknown"


def _events_drained(daemon: Daemon) -> bool:
    assert daemon.outbox is not None
    return daemon.outbox.stats().per_class[Stream.EVENTS].records == 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: connections to it are refused


async def test_a_link_that_refuses_shows_down_with_its_failures(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    config = site_config(
        tmp_path, sync=sync_config(tmp_path, f"http://127.0.0.1:{_closed_port()}", "t" * 32)
    )
    daemon = Daemon(config)
    await daemon.start()
    try:
        engine = daemon.sync_engine
        assert engine is not None
        await wait_for(lambda: engine.progress().consecutive_failures >= 3)
        samples, _ = await scrape(http, daemon)
    finally:
        await daemon.stop()
    assert one(samples, "yardlink_sync_link_up") == 0.0
    assert one(samples, "yardlink_sync_link_state", state="offline") == 1.0
    assert one(samples, "yardlink_sync_consecutive_failures") >= 3
    assert ("yardlink_sync_last_handshake_timestamp_seconds", ()) not in samples
    assert one(samples, "yardlink_sync_sent_bytes_total", **{"class": "events"}) == 0.0


async def test_no_sync_metrics_without_a_sync_engine(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    daemon = Daemon(site_config(tmp_path))
    await daemon.start()
    try:
        samples, types = await scrape(http, daemon)
    finally:
        await daemon.stop()
    assert not any(name.startswith("yardlink_sync_") for name, _ in samples)
    assert "yardlink_build_info" in types and "yardlink_task_latency_seconds" in types
