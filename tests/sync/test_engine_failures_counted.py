"""Failures met off the engine's main path are logged and counted in its progress."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sync.outbox import BlobRef, Outbox
from sync.protocol import RawRequest, Stream
from tests.sync.engine_harness import append_events, engine_for, wait_for
from tests.sync.ingest_server import BlobDir, running_ingest


class UnreadableBlobStore(BlobDir):
    """A blob store whose index cannot be read (a failing disk)."""

    async def resolve_raw_request(self, request: RawRequest) -> list[BlobRef]:
        raise OSError(5, "Input/output error", "index.jsonl")


async def test_a_batch_that_cannot_be_encoded_ahead_is_counted(
    tmp_path: Path, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    """Two full batches fill the window; the batch after them, encoded ahead while they
    fly, meets the bad record first: counted and logged.  The send then meets it and
    holds the stream, the record kept."""
    caplog.set_level(logging.INFO)
    await append_events(outbox, 200)  # two full batches (batch_max_records=100)
    await outbox.append(Stream.EVENTS, b'{"latency_ms":"slow"}')
    async with (
        running_ingest(tmp_path / "cloud") as cloud,
        engine_for(tmp_path, outbox, cloud.url, cloud.token) as (engine, _),
    ):
        await wait_for(lambda: engine.progress().classes[Stream.EVENTS].stalled is not None)
        progress = engine.progress()
    assert progress.background_failures >= 1
    assert "encoding events ahead failed" in caplog.text and "BadRecord" in caplog.text
    assert outbox.stats().per_class[Stream.EVENTS].records == 1


async def test_a_raw_request_the_blob_store_fails_on_is_counted(
    tmp_path: Path, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    async with running_ingest(tmp_path / "cloud") as cloud:
        await cloud.add_raw_request("rr-1", seq=7)
        blobs = UnreadableBlobStore(tmp_path / "blobs")
        async with engine_for(tmp_path, outbox, cloud.url, cloud.token, blobs) as (engine, _):
            await wait_for(lambda: engine.progress().raw_request_failures >= 1)
            engine.sync_now()  # asked again at the next handshake, failing again
            await wait_for(lambda: engine.progress().raw_request_failures >= 2)
            assert engine.progress().unknown_raw_requests == 0  # not reported as unknown
    assert "resolving raw request" in caplog.text and "Input/output error" in caplog.text
