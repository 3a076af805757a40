"""The engine's raw side against the REAL ingest service's tus server: priority over
events, requested raw, blobs that vanished locally."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

import pytest

from sync.linkemu import Direction, LinkConditions, LinkEmulator
from sync.outbox import Outbox
from sync.protocol import Stream
from tests.sync.engine_harness import append_events, drained, engine_for, wait_for
from tests.sync.ingest_server import BlobDir, lake_seqs, running_ingest
from tests.sync.tus_servers import stored_blob


async def test_events_backlog_goes_before_any_raw_byte(tmp_path: Path, outbox: Outbox) -> None:
    seqs = await append_events(outbox, 2000)
    blobs = BlobDir(tmp_path / "blobs")  # same directory engine_for serves from
    refs = [blobs.add(os.urandom(150_000), seq=i) for i in range(3)]
    for ref in refs:
        await outbox.append_blob_ref(Stream.RAW_SAMPLED, ref)
    async with running_ingest(tmp_path / "cloud") as cloud:
        emu = LinkEmulator(("127.0.0.1", cloud.port), LinkConditions(rtt_s=0.02, rate_bps=8e6))
        async with emu, engine_for(tmp_path, outbox, emu.url, cloud.token):
            await wait_for(drained(outbox, Stream.EVENTS, Stream.RAW_SAMPLED))
        calls = [(m, p) for _, m, p in cloud.requests]
        puts = [i for i, (m, _) in enumerate(calls) if m == "PUT"]
        raw = [i for i, (_, p) in enumerate(calls) if p.startswith(("/v1/uploads", "/v1/blobs"))]
        assert len(puts) == 20 and raw
        assert max(puts) < min(raw)  # no raw request at all before the last event batch
        assert sorted(lake_seqs(cloud.settings.data_dir, Stream.EVENTS)) == seqs
        for ref in refs:
            stored = stored_blob(cloud.settings.data_dir, ref.sha256)
            assert stored is not None and hashlib.sha256(stored).hexdigest() == ref.sha256


async def test_requested_raw_is_delivered_and_settled(tmp_path: Path, outbox: Outbox) -> None:
    blobs = BlobDir(tmp_path / "blobs")
    ref = blobs.add(os.urandom(300_000), seq=77)
    async with running_ingest(tmp_path / "cloud") as cloud:
        await cloud.add_raw_request("rr-77", seq=77)
        async with engine_for(tmp_path, outbox, cloud.url, cloud.token, blobs) as (engine, _):
            await wait_for(
                lambda: engine.progress().classes[Stream.RAW_REQUESTED].sent_records == 1
            )
            engine.sync_now()
            await wait_for(lambda: not engine.state.state.delivered)
        assert await cloud.raw_request_state("rr-77") == "delivered"
        stored = stored_blob(cloud.settings.data_dir, ref.sha256)
        assert stored is not None and hashlib.sha256(stored).hexdigest() == ref.sha256
        assert outbox.stats().per_class[Stream.RAW_REQUESTED].records == 0


async def test_missing_blob_is_kept_not_dropped(
    tmp_path: Path, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    blobs = BlobDir(tmp_path / "blobs")
    gone = blobs.add(b"evicted frame", seq=1)
    (blobs.root / gone.sha256).unlink()
    later = blobs.add(os.urandom(50_000), seq=2)
    await outbox.append_blob_ref(Stream.RAW_SAMPLED, gone)
    await outbox.append_blob_ref(Stream.RAW_SAMPLED, later)
    caplog.set_level(logging.ERROR, "sync")
    async with running_ingest(tmp_path / "cloud") as cloud:
        async with engine_for(tmp_path, outbox, cloud.url, cloud.token) as (engine, _):
            await wait_for(lambda: engine.progress().classes[Stream.RAW_SAMPLED].sent_records == 1)
            await asyncio.sleep(0.2)
            assert engine.running
        assert stored_blob(cloud.settings.data_dir, later.sha256) is not None
    # The missing one stays (and the delivered one above it cannot be acked past it).
    assert outbox.stats().per_class[Stream.RAW_SAMPLED].records == 2
    assert "is gone from the blob store" in caplog.text


async def test_young_partial_batch_still_goes_before_raw(tmp_path: Path, outbox: Outbox) -> None:
    """Events too few and too young for a batch of their own are flushed before raw goes."""
    seqs = await append_events(outbox, 50)
    blobs = BlobDir(tmp_path / "blobs")
    await outbox.append_blob_ref(Stream.RAW_SAMPLED, blobs.add(os.urandom(40_000)))
    async with running_ingest(tmp_path / "cloud") as cloud:
        async with engine_for(
            tmp_path, outbox, cloud.url, cloud.token, blobs, batch_max_age_s=60.0
        ):
            await wait_for(drained(outbox, Stream.EVENTS, Stream.RAW_SAMPLED))
        calls = [(m, p) for _, m, p in cloud.requests]
        puts = [i for i, (m, _) in enumerate(calls) if m == "PUT"]
        raw = [i for i, (_, p) in enumerate(calls) if p.startswith(("/v1/uploads", "/v1/blobs"))]
        assert len(puts) == 1 and raw and puts[0] < min(raw)
        assert sorted(lake_seqs(cloud.settings.data_dir, Stream.EVENTS)) == seqs


async def test_daily_budget_and_bandwidth_cap(tmp_path: Path, outbox: Outbox) -> None:
    """A metered link: raw_sampled may send 100 kB a day; the global cap paces the bytes."""
    blobs = BlobDir(tmp_path / "blobs")
    refs = [blobs.add(os.urandom(60_000)) for _ in range(3)]
    for ref in refs:
        await outbox.append_blob_ref(Stream.RAW_SAMPLED, ref)
    async with running_ingest(tmp_path / "cloud") as cloud:
        async with engine_for(
            tmp_path,
            outbox,
            cloud.url,
            cloud.token,
            blobs,
            daily_budget_bytes={Stream.RAW_SAMPLED: 100_000},
            bandwidth_cap_bps=800_000,  # 100 kB/s
        ) as (engine, _):
            started = asyncio.get_running_loop().time()
            await wait_for(lambda: engine.progress().classes[Stream.RAW_SAMPLED].sent_records == 2)
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(0.5)
            progress = engine.progress().classes[Stream.RAW_SAMPLED]
            assert progress.sent_records == 2  # the third waits for tomorrow's budget
            assert progress.budget_left_bytes == 0
            assert progress.pending_records == 1
        # 120 kB at 100 kB/s, minus the token bucket's 0.25 s burst.
        assert elapsed >= 0.9
    # The spending survives a restart (state file), so a restart does not reset the budget.
    assert '"raw_sampled":120000' in (tmp_path / "sync-state.json").read_text()


async def test_every_file_opened_for_upload_is_released_even_after_cuts(
    tmp_path: Path, outbox: Outbox
) -> None:
    """The appliance's blob source hands out a temporary copy per attempt; the engine
    must give each one back (delivered or cut), or a flapping link fills the disk."""
    blobs = BlobDir(tmp_path / "blobs")
    ref = blobs.add(os.urandom(600_000), seq=5)
    await outbox.append_blob_ref(Stream.RAW_SAMPLED, ref)
    async with running_ingest(tmp_path / "cloud") as cloud:
        emu = LinkEmulator(("127.0.0.1", cloud.port), LinkConditions(rtt_s=0.01))
        async with (
            emu,
            engine_for(
                tmp_path,
                outbox,
                emu.url,
                cloud.token,
                blobs,
                chunk_min_bytes=64 << 10,
                chunk_max_bytes=64 << 10,
            ) as (engine, _),
        ):
            for _ in range(3):  # cut mid-chunk, three times
                await wait_for(lambda: len(blobs.opened) > len(blobs.released))
                emu.cut_after(20_000, Direction.UP)
                await wait_for(
                    lambda: emu.stats.cuts > 0 and len(blobs.released) == len(blobs.opened)
                )
            await wait_for(drained(outbox, Stream.RAW_SAMPLED), timeout=60)
        assert stored_blob(cloud.settings.data_dir, ref.sha256) is not None
    assert len(blobs.opened) >= 2  # at least one attempt was cut and retried
    assert sorted(blobs.released) == sorted(blobs.opened)
