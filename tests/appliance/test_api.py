"""The local API over real HTTP against a real daemon: bad input is refused, nothing stops it."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from appliance.daemon import Daemon
from appliance.sources.synthetic import SyntheticYardCamera
from tests.appliance.daemon_harness import TOKEN, base_url, read_events, site_config, wait_for
from tests.raw_http import raw_exchange

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    running = Daemon(site_config(tmp_path))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _jpeg() -> bytes:
    return SyntheticYardCamera(3).frame(0).encode()


@pytest.mark.parametrize(
    ("body", "headers", "query", "status", "message"),
    [
        (
            b"\xff\xd8\xff\xe0" + b"\x00" * 500,
            {"Content-Type": "image/jpeg"},
            "camera=gate-in",
            400,
            "corrupt image/jpeg",
        ),
        (b"", {"Content-Type": "image/jpeg"}, "camera=gate-in", 400, "zero bytes"),
        (b"x" * (50 << 20), {"Content-Type": "image/jpeg"}, "camera=gate-in", 413, "limit"),
        (None, {"Content-Type": "text/plain"}, "camera=gate-in", 415, "unsupported content type"),
        (None, {"Content-Type": "image/png"}, "camera=gate-in", 415, "bytes are image/jpeg"),
        (None, {"Content-Type": "image/jpeg"}, "camera=nope", 404, "not configured"),
        (None, {"Content-Type": "image/jpeg"}, "", 400, "name the camera"),
        (None, {"X-Frame-Metadata": "{not json"}, "camera=gate-in", 400, "not valid JSON"),
        (
            None,
            {"Content-Type": "image/jpeg", "X-Frame-Metadata": "[" * 3000 + "]" * 3000},
            "camera=gate-in",
            400,
            "nested too deeply",
        ),
        (
            None,
            {"X-Frame-Metadata": '{"lane": 3, "driver": "J. Smith"}'},
            "camera=gate-in",
            400,
            "keys ['driver'] are not in [local_api] frame_metadata_keys",
        ),
        (
            None,
            {"X-Frame-Metadata": '{"lane": {"no": 3}}'},
            "camera=gate-in",
            400,
            "'lane' must be a string, number, boolean or null, not a JSON object",
        ),
        (
            None,
            {"Content-Type": "image/jpeg", "Content-Encoding": "gzip"},  # a plain JPEG body
            "camera=gate-in",
            400,
            "content-encoding",
        ),
    ],
)
async def test_bad_frames_get_a_clear_4xx_and_the_daemon_keeps_running(
    daemon: Daemon,
    http: aiohttp.ClientSession,
    body: bytes | None,
    headers: dict[str, str],
    query: str,
    status: int,
    message: str,
) -> None:
    url = f"{base_url(daemon)}/v1/frames?{query}"
    payload = io.BytesIO(_jpeg() if body is None else body)
    async with http.post(url, data=payload, headers={**AUTH, **headers}) as resp:
        assert resp.status == status
        answer = await resp.json()
        assert message in answer["detail"]
    async with http.post(
        f"{base_url(daemon)}/v1/frames?camera=gate-in",
        data=_jpeg(),
        headers={**AUTH, "Content-Type": "image/jpeg"},
    ) as resp:
        assert resp.status == 201
    await wait_for(lambda: sum(daemon.telemetry.results.values()) == len(daemon.tasks))


@pytest.mark.parametrize(
    ("headers", "status"), [({}, 401), ({"Authorization": "Bearer wrong-token-xxxxxxx"}, 403)]
)
async def test_missing_or_wrong_token_is_refused(
    daemon: Daemon, http: aiohttp.ClientSession, headers: dict[str, str], status: int
) -> None:
    for method, path in (
        ("GET", "/v1/status"),
        ("POST", "/v1/frames?camera=gate-in"),
        ("GET", "/metrics"),
    ):
        async with http.request(method, base_url(daemon) + path, headers=headers, data=b"") as resp:
            assert resp.status == status
            assert "token" in (await resp.json())["detail"]


async def test_status_metrics_and_events_report_a_pushed_frame(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    assert sorted(daemon.tasks) == ["face_anonymize", "gate_ocr"]
    async with http.get(f"{base_url(daemon)}/v1/events", headers=AUTH) as events:
        assert events.status == 200
        async with http.post(
            f"{base_url(daemon)}/v1/frames",
            data=_jpeg(),
            headers={**AUTH, "X-Camera-Id": "gate-out", "Content-Type": "image/jpeg"},
        ) as resp:
            assert resp.status == 201
        seen = set()
        async for line in events.content:
            if line.startswith(b"data: "):
                seen.add(line)
            if len(seen) == 2:
                break
    async with http.get(f"{base_url(daemon)}/v1/status", headers=AUTH) as resp:
        status = await resp.json()
    assert status["models"]["loaded"] == ["face_anonymize", "gate_ocr"]
    assert status["outbox"]["classes"]["events"]["records"] == 2
    assert status["tasks"]["gate_ocr"]["latency_ms"]["p50"] > 0
    assert status["tasks"]["gate_ocr"]["errors"] == 0
    assert status["tasks"]["gate_ocr"]["last_error"] is None
    async with http.get(f"{base_url(daemon)}/metrics", headers=AUTH) as resp:
        text = await resp.text()
    assert 'yardlink_frames_total{camera="gate-out"} 1.0' in text
    assert 'yardlink_outbox_records{class="events"} 2.0' in text


async def test_frame_metadata_rides_with_every_event_of_the_frame(tmp_path: Path) -> None:
    config = site_config(
        tmp_path, local_api={"technician_token": TOKEN, "frame_metadata_keys": ["lane", "trip"]}
    )
    running = Daemon(config)
    await running.start()
    try:
        async with aiohttp.ClientSession() as http:
            for metadata in ('{"trip": "T-77", "lane": 3}', None):
                headers = {**AUTH, "Content-Type": "image/jpeg"}
                if metadata is not None:
                    headers["X-Frame-Metadata"] = metadata
                async with http.post(
                    f"{base_url(running)}/v1/frames?camera=gate-in", data=_jpeg(), headers=headers
                ) as resp:
                    assert resp.status == 201
            expected = 2 * len(running.tasks)
            await wait_for(lambda: sum(running.telemetry.results.values()) == expected)
    finally:
        await running.stop()
    events = await read_events(tmp_path / "var" / "outbox")
    assert sorted(e["task"] for e in events) == sorted(2 * list(running.tasks))
    tagged = [e for e in events if e["frame_metadata"] is not None]
    assert len(tagged) == len(running.tasks)  # each task's record of the first frame
    assert {e["frame_metadata"] for e in tagged} == {'{"lane":3,"trip":"T-77"}'}
    assert {e["task"] for e in tagged} == set(running.tasks)


async def test_the_api_serves_on_a_unix_socket(tmp_path: Path) -> None:
    socket_path = tmp_path / "api.sock"
    config = site_config(
        tmp_path, local_api={"unix_socket": str(socket_path), "technician_token": TOKEN}
    )
    running = Daemon(config)
    await running.start()
    try:
        assert running.api_url == f"unix:{socket_path}"
        connector = aiohttp.UnixConnector(path=str(socket_path))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get("http://appliance/v1/status", headers=AUTH) as resp,
        ):
            assert resp.status == 200
            assert (await resp.json())["device_id"] == "gate-01"
    finally:
        await running.stop()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"BREW /v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\nX-Frame-Metadata: " + b"a" * 9000 + b"\r\n\r\n",
        b"POST /v1/frames?camera=gate-in HTTP/1.1\r\nContent-Length: nine\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
    ],
    ids=["unknown-method", "header-too-long", "bad-content-length", "tls-hello"],
)
async def test_unparseable_requests_get_a_json_4xx(
    daemon: Daemon, http: aiohttp.ClientSession, request_bytes: bytes
) -> None:
    host, port = base_url(daemon).removeprefix("http://").rsplit(":", 1)
    status, head, body = await raw_exchange(host, int(port), request_bytes)
    assert 400 <= status < 500, head[:300]
    assert b"application/json" in head, head[:300]
    error = json.loads(body)
    assert set(error) == {"error", "detail"} and error["detail"], error
    async with http.get(f"{base_url(daemon)}/v1/status", headers=AUTH) as resp:
        assert resp.status == 200
