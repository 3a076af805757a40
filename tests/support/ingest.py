"""The real ingest service for tests on a loopback port (aiohttp's test client), and
batches to send it.  The pytest fixtures over it live in tests/cloud_ingest/conftest.py."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cloud_ingest.app import build_app
from cloud_ingest.app_keys import CATALOG
from cloud_ingest.middleware import IngestAppRunner
from cloud_ingest.provisioning import add_device, add_operator
from cloud_ingest.settings import IngestSettings
from sync.protocol import Stream, make_batch_id
from sync.protocol.parquet import encode_batch
from tests.support.clock import FakeClock

__all__ = [
    "PARQUET",
    "Ingest",
    "IngestTestServer",
    "bearer",
    "event_records",
    "events_batch",
    "running_ingest",
]


class IngestTestServer(TestServer):
    """aiohttp's TestServer with the service's own runner (JSON even for unparseable input)."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return IngestAppRunner(self.app, **kwargs)


@dataclass
class Ingest:
    """A running service plus helpers to provision principals."""

    client: TestClient[web.Request, web.Application]
    app: web.Application
    settings: IngestSettings
    clock: FakeClock  # starts at the real time

    async def device(self, device_id: str = "gate-01", site_id: str = "yard-a") -> str:
        created = await add_device(
            self.app[CATALOG], device_id, site_id, actor="test", now=self.clock()
        )
        return created.token

    async def operator(self, name: str = "alice") -> str:
        created = await add_operator(self.app[CATALOG], name, actor="test", now=self.clock())
        return created.token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def event_records(
    device_id: str,
    site_id: str,
    seqs: range,
    *,
    event_time: float = 1_764_000_000.0,
    frame_metadata: str | None = None,
) -> list[dict[str, Any]]:
    return [
        {
            "device_id": device_id,
            "site_id": site_id,
            "seq": seq,
            "event_time": event_time + i,
            "model_name": "ppocr",
            "model_version": "4.0",
            "camera_id": "cam-1",
            "task": "gate_ocr",
            "latency_ms": 12.5,
            "sla_violated": False,
            "results": [
                {
                    "kind": "container_code",
                    "value": "MSKU1234565",
                    "confidence": 0.9,
                    "valid": True,
                    "box": [1, 2, 3, 4],
                }
            ],
            "raw_sha256": None,
            "frame_metadata": frame_metadata,
        }
        for i, seq in enumerate(seqs)
    ]


def events_batch(
    device_id: str = "gate-01", site_id: str = "yard-a", first: int = 1, last: int = 10, **kw: Any
) -> tuple[str, bytes]:
    body = encode_batch(
        Stream.EVENTS, event_records(device_id, site_id, range(first, last + 1), **kw)
    )
    return make_batch_id(device_id, Stream.EVENTS, first, last), body


PARQUET = {"Content-Type": "application/vnd.apache.parquet"}


@asynccontextmanager
async def running_ingest(
    settings: IngestSettings, customize: Callable[[web.Application], None] | None = None
) -> AsyncIterator[Ingest]:
    """Start the service on a loopback port; stops it (and closes the catalog) on exit."""
    clock = FakeClock(time.time())
    app = build_app(settings, clock=clock)
    if customize is not None:
        customize(app)
    client: TestClient[web.Request, web.Application] = TestClient(IngestTestServer(app))
    await client.start_server()
    try:
        yield Ingest(client, app, settings, clock)
    finally:
        await client.close()
