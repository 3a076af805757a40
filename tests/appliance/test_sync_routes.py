"""The daemon runs the real sync engine against the real ingest service; the API controls it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import cv2
import numpy as np
import pytest

from appliance.daemon import Daemon
from appliance.sources.frames import decode_frame
from appliance.sources.synthetic import SyntheticYardCamera
from sync.protocol import RawRequest, Stream
from tests.appliance.daemon_harness import TOKEN, base_url, site_config, wait_for
from tests.sync.ingest_server import DEVICE, SITE, lake_seqs, running_ingest
from tests.sync.tus_servers import stored_blob

AUTH = {"Authorization": f"Bearer {TOKEN}"}
FRAMES = 3


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_events_reach_the_lake_and_controls_work(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    cloud_dir = tmp_path / "cloud"
    async with running_ingest(cloud_dir) as ingest:
        config = site_config(
            tmp_path,
            site={"device_id": DEVICE, "site_id": SITE, "data_dir": str(tmp_path / "var")},
            sync={
                "cloud_url": ingest.url,
                "token": ingest.token,
                "batch_max_age_s": 0.0,
                "link": {"backoff_initial_s": 0.05, "backoff_max_s": 0.5},
            },
            sampling={"every_n_frames": 1, "max_per_hour": 100, "low_confidence_every_n": 0},
        )
        daemon = Daemon(config)
        await daemon.start()
        try:
            url = base_url(daemon)
            async with http.post(f"{url}/v1/sync/pause", headers=AUTH) as resp:
                assert resp.status == 200 and (await resp.json())["paused"] is True
            camera = SyntheticYardCamera(21)
            for frame in camera.frames(FRAMES):
                data = frame.encode()
                await daemon.queue_frame(decode_frame("gate-in", data, None, max_bytes=1 << 24))
            await wait_for(lambda: daemon.telemetry.results["gate_ocr"] == FRAMES)
            async with http.put(
                f"{url}/v1/sync/bandwidth", json={"bps": "fast"}, headers=AUTH
            ) as resp:
                assert resp.status == 400
            async with http.put(f"{url}/v1/sync/bandwidth", json={"bps": 1e6}, headers=AUTH) as r:
                assert (await r.json())["bandwidth_cap_bps"] == 1e6
            async with http.post(f"{url}/v1/sync/resume", headers=AUTH) as resp:
                assert (await resp.json())["paused"] is False
            async with http.post(f"{url}/v1/sync/now", headers=AUTH) as resp:
                assert resp.status == 200
            await wait_for(lambda: len(lake_seqs(cloud_dir, Stream.EVENTS)) == 2 * FRAMES)
            seq = min(lake_seqs(cloud_dir, Stream.EVENTS))
            await ingest.add_raw_request("req-1", seq)
            async with http.post(f"{url}/v1/sync/now", headers=AUTH) as resp:
                assert resp.status == 200
            ref = (
                await daemon.raw_frames.resolve_raw_request(RawRequest(request_id="x", seq=seq))
            )[0]
            await wait_for(lambda: stored_blob(cloud_dir, ref.sha256) is not None)
            engine = daemon.sync_engine
            assert engine is not None
            for _ in range(100):  # delivery is settled at the next handshake
                if await ingest.raw_request_state("req-1") == "delivered":
                    break
                engine.sync_now()
                await asyncio.sleep(0.2)
            assert await ingest.raw_request_state("req-1") == "delivered"
            uploaded = stored_blob(cloud_dir, ref.sha256)
            assert uploaded is not None
            image = cv2.imdecode(np.frombuffer(uploaded, np.uint8), cv2.IMREAD_COLOR)
            assert image is not None and image.shape[:2] == (720, 1280)  # the blurred JPEG
            async with http.get(f"{url}/v1/status", headers=AUTH) as resp:
                status = await resp.json()
            assert status["sync"]["running"] is True
        finally:
            await daemon.stop()


_BAD_BANDWIDTH_BODIES = [
    b'{"bps": 1e400}',  # parses as infinity
    b'{"bps": Infinity}',
    b'{"bps": NaN}',
    b'{"bps": 1' + b"0" * 400 + b"}",  # an int too large for a float
    b'{"bps": 5e-324}',  # positive, but zero once in bytes per second
    b'{"bps": 0.5}',
    b'{"bps": 0}',
    b'{"bps": -8000}',
    b'{"bps": "8000"}',
    b'{"bps": true}',
    b'{"bps": [8000]}',
    b'{"bps": 8000, "class": "raw_sampled"}',  # an unknown field would be ignored
    b'{"bsp": 8000}',
    b"{}",
    b"[]",
    b"null",
    b"",
    b"\xff\xfe",
    b"[" * 5000 + b"]" * 5000,
]


async def test_bad_bandwidth_bodies_get_a_clear_400_and_change_nothing(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_ingest(tmp_path / "cloud") as ingest:
        config = site_config(
            tmp_path,
            site={"device_id": DEVICE, "site_id": SITE, "data_dir": str(tmp_path / "var")},
            sync={"cloud_url": ingest.url, "token": ingest.token},
        )
        daemon = Daemon(config)
        await daemon.start()
        try:
            url = f"{base_url(daemon)}/v1/sync/bandwidth"
            async with http.put(url, json={"bps": 8000}, headers=AUTH) as resp:
                assert resp.status == 200
                assert (await resp.json())["bandwidth_cap_bps"] == 8000.0
            assert daemon.sync_engine is not None
            assert daemon.sync_engine.bucket.rate_bps == 8000.0  # bits/s (TokenBucket: bytes / 8)
            for body in _BAD_BANDWIDTH_BODIES:
                headers = {**AUTH, "Content-Type": "application/json"}
                async with http.put(url, data=body, headers=headers) as resp:
                    answer = await resp.read()
                    assert resp.status == 400, (body[:40], resp.status, answer[:200])
                    error = json.loads(answer)
                    assert error["error"] == "bad_request" and "bps" in error["detail"]
                    assert "bits per second" in error["detail"]  # the unit is named
            for path in ("/v1/sync", "/v1/status"):  # strict JSON: no Infinity or NaN
                async with http.get(base_url(daemon) + path, headers=AUTH) as resp:
                    assert resp.status == 200
                    answer = json.loads(await resp.read(), parse_constant=_no_constant)
                cap = answer["bandwidth_cap_bps"] if path == "/v1/sync" else None
                assert path != "/v1/sync" or cap == 8000.0
        finally:
            await daemon.stop()


def _no_constant(name: str) -> object:
    raise AssertionError(f"{name} is not JSON")
