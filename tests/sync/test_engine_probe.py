"""After a cut the engine probes for the link instead of sleeping through a backoff,
while a service that answers 5xx still gets the jittered backoff; a flaky link gets
chunks a cut does not void.  Real ingest service on loopback, through the link emulator."""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from sync.link import LinkMonitor
from sync.linkemu import Direction, LinkConditions, LinkEmulator
from sync.outbox import Outbox
from sync.protocol import Stream
from sync.settings import LinkSettings
from tests.sync.engine_harness import append_events, drained, engine_for, wait_for
from tests.sync.ingest_server import BlobDir, lake_seqs, running_ingest
from tests.sync.tus_servers import stored_blob

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def test_a_link_back_after_a_cut_is_found_by_probes_not_after_the_backoff(
    tmp_path: Path, outbox: Outbox
) -> None:
    """Down, the link is tried about every ``probe_interval_s`` (0.05 s here); with the
    backoff (0-30 s after the first failure, 0-60 s after the next) the engine would
    not try five times within the test's 30 s wait, nor deliver once the link is back."""
    seqs = await append_events(outbox, 40)
    slow_backoff = LinkSettings(
        backoff_initial_s=30, backoff_max_s=60, probe_interval_s=0.05, request_timeout_s=5
    )
    async with running_ingest(tmp_path / "cloud") as cloud:
        emu = LinkEmulator(("127.0.0.1", cloud.port), LinkConditions(rtt_s=0.01))
        async with emu:
            emu.set_online(False)
            async with engine_for(tmp_path, outbox, emu.url, cloud.token, link=slow_backoff) as (
                engine,
                _,
            ):
                await wait_for(lambda: emu.stats.refused >= 5)  # five tries while down
                assert engine.progress().last_error is not None
                emu.set_online(True)
                await wait_for(drained(outbox, Stream.EVENTS))
        assert sorted(lake_seqs(cloud.settings.data_dir, Stream.EVENTS)) == seqs


async def test_a_service_answering_503_still_gets_the_jittered_backoff(
    tmp_path: Path, outbox: Outbox
) -> None:
    """A 503 is an answer: the service is in trouble, so the engine waits the backoff
    drawn with full jitter (what keeps a fleet from coming back in lockstep), not a
    probe interval.  The waits are the seeded draws: each gap is at least its draw."""
    settings = LinkSettings(
        backoff_initial_s=0.3, backoff_max_s=0.3, probe_interval_s=0.002, request_timeout_s=5
    )

    times: list[float] = []  # when each handshake arrived

    @web.middleware
    async def overloaded(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/v1/sync":
            times.append(time.monotonic())
            return web.json_response({"error": "overloaded", "detail": "try later"}, status=503)
        return await handler(request)

    async with (
        running_ingest(tmp_path / "cloud", middlewares=[overloaded]) as cloud,
        engine_for(tmp_path, outbox, cloud.url, cloud.token, link=settings),
    ):
        await wait_for(lambda: len(times) >= 7)
    expected = LinkMonitor(settings, rng=random.Random(5))  # engine_for seeds Random(5)
    draws = []
    for _ in range(len(times) - 1):
        expected.failed(0.0, "HTTP 503")
        draws.append(expected.retry_after_s(retryable=True))
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(gap >= draw - 0.005 for gap, draw in zip(gaps, draws, strict=True)), (gaps, draws)
    assert len(set(draws)) == len(draws)  # jittered: no two waits alike
    assert sum(gaps) / len(gaps) > 0.05  # the backoff: 0.15 s on average; a probe: 0.002 s


async def test_chunks_after_a_cut_go_without_checksums_and_the_blob_arrives_whole(
    tmp_path: Path, outbox: Outbox
) -> None:
    """Before any cut every PATCH carries ``Upload-Checksum``; once the link was cut it
    is flaky and they go without (the server keeps the bytes of a cut plain chunk),
    and the blob still arrives byte-exact (the service checks its sha256)."""
    checksummed: list[bool] = []

    @web.middleware
    async def note_checksums(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "PATCH":
            checksummed.append("Upload-Checksum" in request.headers)
        return await handler(request)

    blobs = BlobDir(tmp_path / "blobs")
    data = os.urandom(1 << 20)
    ref = blobs.add(data, seq=3)
    await outbox.append_blob_ref(Stream.RAW_SAMPLED, ref)
    async with running_ingest(tmp_path / "cloud", middlewares=[note_checksums]) as cloud:
        emu = LinkEmulator(("127.0.0.1", cloud.port), LinkConditions(rtt_s=0.01, rate_bps=16e6))
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
            await wait_for(lambda: len(checksummed) >= 3)  # three chunks answered
            emu.cut_after(20_000, Direction.UP)  # mid-chunk
            await wait_for(lambda: emu.stats.cuts > 0)
            await wait_for(drained(outbox, Stream.RAW_SAMPLED), timeout=60)
            assert engine.link.flaky(time.time())
        stored = stored_blob(cloud.settings.data_dir, ref.sha256)
    assert stored is not None and hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
    cut_at = checksummed.index(False) if False in checksummed else len(checksummed)
    assert cut_at >= 3 and all(checksummed[:cut_at])
    assert not any(checksummed[cut_at:]) and len(checksummed) > cut_at


async def test_uploads_cut_by_an_outage_ask_their_offsets_beside_the_probe(
    tmp_path: Path, outbox: Outbox
) -> None:
    """Once the link is back, the uploads the outage cut ask their offsets (HEAD) at once,
    beside the handshake, not one by one after the events that waited go (each a round
    trip before its first byte); every blob still lands whole, the events too."""
    blobs = BlobDir(tmp_path / "blobs")
    refs = [blobs.add(os.urandom(1 << 20), seq=i) for i in range(3)]
    for ref in refs:
        await outbox.append_blob_ref(Stream.RAW_SAMPLED, ref)
    probes = LinkSettings(backoff_initial_s=0.05, probe_interval_s=0.05, request_timeout_s=5)
    conditions = LinkConditions(rtt_s=0.1, rate_bps=4e6)
    async with running_ingest(tmp_path / "cloud") as cloud:
        emu = LinkEmulator(("127.0.0.1", cloud.port), conditions)
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
                link=probes,
            ) as (engine, _),
        ):

            def two_under_way() -> bool:
                return sum(u.offset >= 64 << 10 for u in engine.uploader.uploads.values()) >= 2

            await wait_for(two_under_way)
            emu.set_online(False)
            await wait_for(lambda: not engine.link.usable and emu.stats.refused >= 3)
            seqs = await append_events(outbox, 20)  # waiting when the link comes back
            back = len(cloud.requests)
            emu.set_online(True)
            await wait_for(drained(outbox, Stream.EVENTS, Stream.RAW_SAMPLED), timeout=60)
        after = cloud.requests[back:]
        put = next(i for i, (_, m, p) in enumerate(after) if m == "PUT")
        heads = [p for _, m, p in after[:put] if m == "HEAD" and p.startswith("/v1/uploads/")]
        assert len(heads) >= 2, after[: put + 1]  # before the events' PUT, not after its answer
        assert sorted(lake_seqs(cloud.settings.data_dir, Stream.EVENTS)) == seqs
        for ref in refs:
            stored = stored_blob(cloud.settings.data_dir, ref.sha256)
            assert stored is not None and hashlib.sha256(stored).hexdigest() == ref.sha256
