"""The engine's transport seam and its retry rule, against the real ingest service."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sync.cloud_client import CloudClient
from sync.engine import SyncEngine
from sync.outbox import Outbox
from sync.protocol import BatchAck, Stream, SyncRequest, SyncResponse
from sync.scheduler import TokenBucket
from sync.settings import SyncSettings
from sync.transport import CloudTransport, MissingCloudSettings, connect_cloud
from tests.sync.engine_harness import (
    append_events,
    drained,
    engine_for,
    sync_settings,
    wait_for,
)
from tests.sync.ingest_server import DEVICE, SITE, BlobDir, lake_seqs, running_ingest


class CountingTransport(CloudClient):
    """The real HTTP transport, counting the protocol calls the engine makes through it."""

    def __init__(self, settings: SyncSettings, bucket: TokenBucket) -> None:
        assert settings.cloud_url is not None and settings.token is not None
        super().__init__(str(settings.cloud_url), settings.token, bucket=bucket)
        self.calls: list[str] = []
        self.closed = False

    async def handshake(self, request: SyncRequest) -> SyncResponse:
        self.calls.append("handshake")
        return await super().handshake(request)

    async def put_batch(self, batch_id: str, body: bytes) -> BatchAck:
        self.calls.append("put_batch")
        return await super().put_batch(batch_id, body)

    async def close(self) -> None:
        self.closed = True
        await super().close()


async def test_the_engine_talks_through_the_transport_it_is_given(
    tmp_path: Path, outbox: Outbox
) -> None:
    made: list[tuple[CountingTransport, TokenBucket]] = []

    def factory(settings: SyncSettings, bucket: TokenBucket) -> CloudTransport:
        transport = CountingTransport(settings, bucket)
        made.append((transport, bucket))
        return transport

    seqs = await append_events(outbox, 120)
    async with running_ingest(tmp_path / "cloud") as cloud:
        engine = SyncEngine(
            outbox,
            sync_settings(cloud.url, cloud.token),
            device_id=DEVICE,
            site_id=SITE,
            blob_source=BlobDir(tmp_path / "blobs"),
            state_path=tmp_path / "sync-state.json",
            rng=random.Random(5),
            transport=factory,
        )
        await engine.start()
        try:
            await wait_for(drained(outbox, Stream.EVENTS))
            engine.set_bandwidth_cap(80_000)
        finally:
            await engine.close()
        assert sorted(lake_seqs(cloud.settings.data_dir, Stream.EVENTS)) == seqs
    [(transport, bucket)] = made  # built once, with the engine's own bucket
    assert bucket is engine.bucket and bucket.rate_bps == 80_000  # the cap paces this transport
    assert "handshake" in transport.calls and transport.calls.count("put_batch") >= 2
    assert transport.closed


def test_the_default_transport_needs_a_cloud(tmp_path: Path) -> None:
    settings = SyncSettings()
    with pytest.raises(MissingCloudSettings, match="cloud_url") as raised:
        connect_cloud(settings, TokenBucket(None))
    assert isinstance(raised.value, ValueError) and not raised.value.retryable


async def test_a_refusal_is_not_retried_at_link_speed(tmp_path: Path, outbox: Outbox) -> None:
    """A 401 (a wrong token) will not pass by itself: the engine keeps trying (records
    are never dropped) but waits at least a second between attempts, while a link
    failure is retried after the short jittered backoff (0.05-0.5 s here)."""
    await append_events(outbox, 5)
    async with running_ingest(tmp_path / "cloud") as cloud:

        def handshakes() -> list[float]:
            return [t for t, _, path in cloud.requests if path == "/v1/sync"]

        async with engine_for(tmp_path, outbox, cloud.url, "not-the-token") as (engine, _):
            await wait_for(lambda: len(handshakes()) >= 3)
            progress = engine.progress()
        syncs = handshakes()
    assert progress.last_error is not None and "401" in progress.last_error
    gaps = [round(b - a, 3) for a, b in zip(syncs, syncs[1:], strict=False)]
    assert min(gaps) >= 0.99, gaps  # before: 0.01-0.5 s (10 handshakes in 2.5 s)
    assert outbox.stats().per_class[Stream.EVENTS].records == 5
