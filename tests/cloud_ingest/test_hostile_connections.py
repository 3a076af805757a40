"""What reaches the service before any token: malformed requests, and the metrics port.

Issue 22 items 6, 7 and 11: half-sent heads and stalled bodies are cut after a
timeout and one address holds a bounded number of connections; a flood of
malformed requests (bad Content-Length, oversized headers) gives a few warning
lines, never aiohttp.server tracebacks; Prometheus scrapes a loopback-only port
without holding an operator token.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from cloud_ingest.server import serve
from cloud_ingest.settings import IngestSettings
from sync.shared import json_error_runner
from sync.shared.json_error_runner import ClientFaultLog
from tests.support.ingest import Ingest, running_ingest

BAD_REQUESTS = [
    b"POST /v1/sync HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
]


async def _send_raw(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    answer = await reader.read(4096)
    writer.close()
    await writer.wait_closed()
    return answer


async def test_malformed_requests_are_a_few_warning_lines_not_tracebacks(
    ingest: Ingest, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(json_error_runner, "CLIENT_FAULTS", ClientFaultLog(per_minute=10))
    port = ingest.client.port
    assert port is not None
    with caplog.at_level(logging.DEBUG):
        for i in range(40):
            answer = await _send_raw(port, BAD_REQUESTS[i % 2])
            assert answer.split(b" ")[1].startswith(b"4"), answer[:80]
            assert b'"error"' in answer
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    warnings = [r for r in caplog.records if r.name == "sync.shared.json_error_runner"]
    assert 1 <= len(warnings) <= 10
    assert all("\n" not in r.getMessage() for r in warnings)
    assert (await ingest.client.get("/healthz")).status == 200  # still answering


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except urllib.error.URLError:
        return 0  # not listening (yet)


async def test_metrics_port_scrapes_without_a_token_on_loopback_only(tmp_path: Path) -> None:
    port, metrics_port = _free_port(), _free_port()
    settings = IngestSettings(data_dir=tmp_path / "data", port=port, metrics_port=metrics_port)
    stop = asyncio.Event()
    server = asyncio.create_task(serve(settings, stop=stop))
    try:
        for _ in range(100):
            if await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/healthz") == 200:
                break
            await asyncio.sleep(0.05)
        scraped = await asyncio.to_thread(_get, f"http://127.0.0.1:{metrics_port}/metrics")
        assert scraped == 200
        main = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        assert main == 401  # the service port still wants an operator token
        other = await asyncio.to_thread(_get, f"http://127.0.0.1:{metrics_port}/v1/admin/devices")
        assert other == 404  # the scrape port serves nothing else
    finally:
        stop.set()
        await server


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the server sends before closing, or TimeoutError if it keeps the socket open."""
    return await asyncio.wait_for(reader.read(), seconds)


async def test_half_sent_heads_are_closed_after_the_header_timeout(tmp_path: Path) -> None:
    settings = IngestSettings(
        data_dir=tmp_path / "data", sweep_interval_s=3600, header_timeout_s=0.5
    )
    async with running_ingest(settings) as ingest:
        port = ingest.client.port
        assert port is not None
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(50)]
        for _, writer in held:
            writer.write(b"POST /v1/sync HTTP/1.1\r\nHost: x\r\nContent-Le")
            await writer.drain()
        started = time.monotonic()
        for reader, writer in held:
            await _closed_within(reader, 5.0)  # EOF: the server closed it
            writer.close()
        assert time.monotonic() - started < 5.0
        assert (await ingest.client.get("/healthz")).status == 200


async def test_a_stalled_body_is_cut_and_nothing_is_stored(tmp_path: Path) -> None:
    settings = IngestSettings(
        data_dir=tmp_path / "data", sweep_interval_s=3600, body_stall_timeout_s=0.5
    )
    async with running_ingest(settings) as ingest:
        token = await ingest.device()
        port = ingest.client.port
        assert port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"PUT /v1/batches/gate-01.events.1-10 HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Type: application/vnd.apache.parquet\r\nContent-Length: 1000\r\n\r\n"
            + b"P"
            * 10
        )
        await writer.drain()
        started = time.monotonic()
        await _closed_within(reader, 5.0)
        assert time.monotonic() - started < 5.0
        writer.close()
        assert not [p for p in settings.lake_dir.rglob("*") if p.is_file()]


async def test_connections_per_address_are_capped(tmp_path: Path) -> None:
    settings = IngestSettings(
        data_dir=tmp_path / "data", sweep_interval_s=3600, max_connections_per_address=4
    )
    async with running_ingest(settings) as ingest:
        port = ingest.client.port
        assert port is not None
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await _closed_within(reader, 5.0)
        assert answer.startswith(b"HTTP/1.1 503") and b"too_many_connections" in answer
        writer.close()
        for _, held_writer in held:
            held_writer.close()
            await held_writer.wait_closed()
        for _ in range(50):  # the server sees the closes, and admits again
            await asyncio.sleep(0.02)
            if (await _send_raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
                b"HTTP/1.1 200"
            ):
                break
        else:
            pytest.fail("the address was not admitted again after its connections closed")
