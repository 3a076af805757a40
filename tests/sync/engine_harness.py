"""The engine under test: settings for fast tests and waiting helpers (the ``outbox``
fixture is in tests/sync/conftest.py)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from sync.engine import SyncEngine
from sync.outbox import Outbox
from sync.protocol import Stream
from sync.settings import LinkSettings, SyncSettings
from tests.support.outbox import OUTBOX
from tests.sync.ingest_server import DEVICE, SITE, BlobDir, event_payload

__all__ = ["OUTBOX", "append_events", "drained", "engine_for", "sync_settings", "wait_for"]


def sync_settings(url: str, token: str, **overrides: object) -> SyncSettings:
    values: dict[str, object] = {
        "cloud_url": url,
        "token": token,
        "batch_max_records": 100,
        "batch_max_age_s": 0.0,
        "handshake_interval_s": 5.0,
        "chunk_min_bytes": 16 << 10,
        "chunk_target_s": 0.5,
        "link": LinkSettings(backoff_initial_s=0.05, backoff_max_s=0.5, request_timeout_s=5),
    }
    values.update(overrides)
    return SyncSettings.model_validate(values)


@asynccontextmanager
async def engine_for(
    tmp_path: Path,
    outbox: Outbox,
    url: str,
    token: str,
    blobs: BlobDir | None = None,
    **overrides: object,
) -> AsyncIterator[tuple[SyncEngine, BlobDir]]:
    blobs = blobs or BlobDir(tmp_path / "blobs")
    engine = SyncEngine(
        outbox,
        sync_settings(url, token, **overrides),
        device_id=DEVICE,
        site_id=SITE,
        blob_source=blobs,
        state_path=tmp_path / "sync-state.json",
        rng=random.Random(5),
    )
    await engine.start()
    try:
        yield engine, blobs
    finally:
        await engine.close()


async def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def drained(outbox: Outbox, *streams: Stream) -> Callable[[], bool]:
    return lambda: all(outbox.stats().per_class[s].records == 0 for s in streams)


async def append_events(outbox: Outbox, n: int, start: int = 0) -> list[int]:
    return await outbox.append_many(
        Stream.EVENTS, [event_payload(i) for i in range(start, start + n)]
    )
