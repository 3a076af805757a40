"""The sync engine against the REAL ingest service on loopback (optionally through linkemu)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from sync.batches import encode_records
from sync.link import LinkState
from sync.linkemu import Direction, LinkConditions, LinkEmulator
from sync.metadata_delivery import FIRST_BATCHES_MAX_RECORDS
from sync.outbox import Outbox
from sync.protocol import Stream, make_batch_id
from sync.protocol.parquet import encode_batch
from tests.sync.engine_harness import (
    OUTBOX,
    append_events,
    drained,
    engine_for,
    wait_for,
)
from tests.sync.ingest_server import DEVICE, SITE, lake_seqs, running_ingest


async def test_delivers_every_event_exactly_once(tmp_path: Path, outbox: Outbox) -> None:
    seqs = await append_events(outbox, 550)
    telemetry = await outbox.append(Stream.TELEMETRY, b'{"kind":"fps","body":"{}"}')
    async with running_ingest(tmp_path / "cloud") as cloud:
        async with engine_for(tmp_path, outbox, cloud.url, cloud.token) as (engine, _):
            await wait_for(drained(outbox, Stream.EVENTS, Stream.TELEMETRY))
            progress = engine.progress()
            assert progress.link is LinkState.ONLINE
            assert progress.classes[Stream.EVENTS].sent_records == 550
        assert sorted(lake_seqs(cloud.settings.data_dir, Stream.EVENTS)) == seqs
        assert lake_seqs(cloud.settings.data_dir, Stream.TELEMETRY) == [telemetry]
        puts = [p for _, m, p in cloud.requests if m == "PUT"]
        assert len(puts) == 7  # five 100-record batches, one of 50 events, one telemetry


async def test_backlog_starts_with_a_small_batch_and_sends_its_tail_at_once(
    tmp_path: Path, outbox: Outbox
) -> None:
    """Small first batches (the link starts before a full batch is encoded), full ones
    encoded ahead, and the partial tail right behind them - not after batch_max_age_s."""
    one, two = FIRST_BATCHES_MAX_RECORDS
    seqs = await append_events(outbox, one + two + 5_000 + 4_500)
    async with running_ingest(tmp_path / "cloud") as cloud:
        async with engine_for(
            tmp_path, outbox, cloud.url, cloud.token, batch_max_records=5_000, batch_max_age_s=600
        ):
            await wait_for(drained(outbox, Stream.EVENTS), timeout=60)
        assert sorted(lake_seqs(cloud.settings.data_dir, Stream.EVENTS)) == seqs
        puts = [p.rsplit(".", 1)[-1] for _, m, p in cloud.requests if m == "PUT"]
    a, b, c = seqs[one], seqs[one + min(two, 5_000)], seqs[one + min(two, 5_000) + 5_000]
    assert puts == [
        f"{seqs[0]}-{a - 1}",
        f"{a}-{b - 1}",
        f"{b}-{c - 1}",
        f"{c}-{seqs[-1]}",
    ]


async def cut_fired(emu: LinkEmulator, before: int, timeout: float = 3.0) -> None:
    """Wait (up to ``timeout``) until the cut armed after ``before`` cuts fired: the
    next ``cut_after`` replaces one that has not, and on a loaded machine the traffic
    that fires it can take longer than the pause between two faults."""
    deadline = asyncio.get_running_loop().time() + timeout
    while emu.stats.cuts == before and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)


async def test_cuts_and_flaps_lose_nothing_and_duplicate_nothing(
    tmp_path: Path, outbox: Outbox
) -> None:
    seqs = await append_events(outbox, 3000)
    async with running_ingest(tmp_path / "cloud") as cloud:
        emu = LinkEmulator(("127.0.0.1", cloud.port), LinkConditions(rtt_s=0.01))
        async with emu, engine_for(tmp_path, outbox, emu.url, cloud.token) as (engine, _):
            rng = random.Random(11)
            for _ in range(12):  # cut mid-request, after the request, or drop the link
                kind = rng.choice(["up", "down", "flap"])
                before = emu.stats.cuts
                if kind == "up":
                    emu.cut_after(rng.randint(100, 20_000), Direction.UP)
                elif kind == "down":
                    emu.cut_after(1, Direction.DOWN)
                else:
                    emu.set_online(False)
                    await asyncio.sleep(0.1)
                    emu.set_online(True)
                if kind != "flap":  # a flap cuts at once (or finds nothing open)
                    await cut_fired(emu, before)
                await asyncio.sleep(0.15)
            await wait_for(drained(outbox, Stream.EVENTS), timeout=60)
            assert engine.progress().link is LinkState.ONLINE
        assert emu.stats.cuts >= 5
    lake = lake_seqs(cloud.settings.data_dir, Stream.EVENTS)
    assert sorted(lake) == seqs  # exactly once: no loss, no duplicate


async def test_first_batch_goes_out_before_the_handshake_answer(
    tmp_path: Path, outbox: Outbox
) -> None:
    """One round trip saved after link-up: the first PUT does not wait for the answer
    (once the outbox's seqs were confirmed by an earlier handshake; a new outbox waits)."""
    await outbox.confirm_history(0)
    seqs = await append_events(outbox, 300)
    rtt = 0.4
    async with running_ingest(tmp_path / "cloud") as cloud:
        async with (
            LinkEmulator(("127.0.0.1", cloud.port), LinkConditions(rtt_s=rtt)) as emu,
            engine_for(tmp_path, outbox, emu.url, cloud.token),
        ):
            await wait_for(drained(outbox, Stream.EVENTS))
        arrivals = {(m, p): t for t, m, p in reversed(cloud.requests)}  # first of each
        first_put = arrivals["PUT", f"/v1/batches/{DEVICE}.events.{seqs[0]}-{seqs[99]}"]
        assert first_put - arrivals["POST", "/v1/sync"] < rtt / 2
        assert sorted(lake_seqs(cloud.settings.data_dir, Stream.EVENTS)) == seqs


async def test_a_refused_first_batch_is_not_overtaken_by_a_stored_second(
    tmp_path: Path, outbox: Outbox
) -> None:
    """The cloud holds the first 100 under another id (a restored outbox) and answers
    the handshake before the first batch: the second batch must not be stored above
    the refused one, or delta sync would ack the refused batch's missing seqs."""
    await outbox.confirm_history(0)  # it synced before: its seqs are its own
    seqs = await append_events(outbox, 10_000)
    async with running_ingest(tmp_path / "cloud") as cloud:
        records = outbox.read(Stream.EVENTS, max_records=100)
        batch = encode_records(Stream.EVENTS, records, device_id=DEVICE, site_id=SITE)
        assert await cloud.put_batch(batch.batch_id, batch.body) == 201
        conditions = LinkConditions(rtt_s=0.1, rate_bps=1e6)
        async with (
            LinkEmulator(("127.0.0.1", cloud.port), conditions) as emu,
            engine_for(tmp_path, outbox, emu.url, cloud.token, batch_max_records=5_000),
        ):
            await wait_for(drained(outbox, Stream.EVENTS), timeout=60)
        assert sorted(lake_seqs(cloud.settings.data_dir, Stream.EVENTS)) == seqs


async def test_delta_sync_acks_what_the_cloud_holds(tmp_path: Path, outbox: Outbox) -> None:
    await outbox.confirm_history(0)  # it synced before: its seqs are its own
    seqs = await append_events(outbox, 200)
    async with running_ingest(tmp_path / "cloud") as cloud:
        # The cloud already got the first 120 (e.g. before a crash lost the local ack).
        records = outbox.read(Stream.EVENTS, max_records=120)
        batch = encode_records(Stream.EVENTS, records, device_id=DEVICE, site_id=SITE)
        assert await cloud.put_batch(batch.batch_id, batch.body) == 201
        async with engine_for(tmp_path, outbox, cloud.url, cloud.token):
            await wait_for(drained(outbox, Stream.EVENTS))
        puts = [p for _, m, p in cloud.requests if m == "PUT"]
        # Ours; batches the engine sent before a handshake's answer are refused (412:
        # they share seqs with ours, nothing stored); in the end only the missing 80.
        assert puts[0] == f"/v1/batches/{batch.batch_id}"
        assert puts[-1] == f"/v1/batches/{DEVICE}.events.{seqs[120]}-{seqs[-1]}"
        for path in puts[1:-1]:  # every other PUT overlapped ours, so it was refused
            first_seq = int(path.rsplit(".", 1)[-1].split("-")[0])
            assert first_seq <= seqs[119], path
        assert sorted(lake_seqs(cloud.settings.data_dir, Stream.EVENTS)) == seqs


async def test_conflict_holds_the_stream_and_keeps_records(
    tmp_path: Path, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    """409: the cloud holds our next batch id with other bytes (put there after our
    handshake, so the watermark did not cover it yet)."""
    caplog.set_level(logging.ERROR, "sync")
    async with running_ingest(tmp_path / "cloud") as cloud:
        async with engine_for(tmp_path, outbox, cloud.url, cloud.token) as (engine, _):
            await wait_for(lambda: engine.progress().last_handshake_at is not None)
            first = outbox.stats().next_seq
            last = first + 49
            other = encode_batch(
                Stream.EVENTS,
                [
                    {"device_id": DEVICE, "site_id": SITE, "seq": s, "event_time": 1.0}
                    for s in (first, last)
                ],
            )
            batch_id = make_batch_id(DEVICE, Stream.EVENTS, first, last)
            assert await cloud.put_batch(batch_id, other) == 201
            assert await append_events(outbox, 50) == list(range(first, last + 1))
            telemetry = await outbox.append(Stream.TELEMETRY, b'{"kind":"fps","body":"{}"}')
            await wait_for(drained(outbox, Stream.TELEMETRY))
            await wait_for(lambda: engine.progress().classes[Stream.EVENTS].stalled is not None)
            engine.sync_now()  # the handshake's watermark must not ack the held range either
            await wait_for(lambda: cloud.requests[-1][2] == "/v1/sync")
            await asyncio.sleep(0.2)
            assert engine.running
            assert outbox.stats().per_class[Stream.EVENTS].records == 50
            assert outbox.acked_watermark(Stream.EVENTS) < first
        assert lake_seqs(cloud.settings.data_dir, Stream.TELEMETRY) == [telemetry]
    assert "409 conflict" in caplog.text and batch_id in caplog.text


async def test_bad_cloud_answers_do_not_stop_the_engine(
    tmp_path: Path, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    """Malformed handshake JSON and 500s: typed errors in the log, then it recovers."""
    faults = iter(["malformed", "500", "malformed", "500-batch"])
    state = {"fault": next(faults, None)}

    @web.middleware
    async def misbehave(request: web.Request, handler: Callable[..., object]) -> web.StreamResponse:
        fault = state["fault"]
        if fault is not None and (request.path == "/v1/sync") == (fault != "500-batch"):
            state["fault"] = next(faults, None)
            if fault == "malformed":
                return web.Response(
                    text='{"acked": {"events": "lots"', content_type="application/json"
                )
            return web.json_response({"error": "internal", "detail": "boom"}, status=500)
        response = await handler(request)  # type: ignore[misc]
        assert isinstance(response, web.StreamResponse)
        return response

    seqs = await append_events(outbox, 150)
    caplog.set_level(logging.WARNING, "sync")
    async with running_ingest(tmp_path / "cloud", middlewares=[misbehave]) as cloud:
        async with engine_for(tmp_path, outbox, cloud.url, cloud.token) as (engine, _):
            await wait_for(drained(outbox, Stream.EVENTS))
            assert engine.progress().link is LinkState.ONLINE
        assert sorted(lake_seqs(cloud.settings.data_dir, Stream.EVENTS)) == seqs
    assert state["fault"] is None
    assert "ProtocolError: malformed handshake answer" in caplog.text
    assert "CloudUnavailable" in caplog.text and "HTTP 500" in caplog.text


async def test_unknown_raw_request_is_reported_once(tmp_path: Path, outbox: Outbox) -> None:
    async with running_ingest(tmp_path / "cloud") as cloud:
        await cloud.add_raw_request("rr-unknown", seq=424242)
        async with engine_for(tmp_path, outbox, cloud.url, cloud.token) as (engine, _):
            await wait_for(lambda: engine.progress().last_handshake_at is not None)
            engine.sync_now()
            await wait_for(lambda: engine.progress().unknown_raw_requests == 0)
            engine.sync_now()
            await asyncio.sleep(0.2)
            assert await cloud.raw_request_state("rr-unknown") == "unavailable"
        syncs = [p for _, m, p in cloud.requests if p == "/v1/sync"]
        assert len(syncs) >= 2


async def test_pause_resume_and_offline_state(tmp_path: Path, outbox: Outbox) -> None:
    async with running_ingest(tmp_path / "cloud") as cloud:
        emu = LinkEmulator(("127.0.0.1", cloud.port))
        async with emu, engine_for(tmp_path, outbox, emu.url, cloud.token) as (engine, _):
            await wait_for(lambda: engine.progress().link is LinkState.ONLINE)
            engine.pause()
            await asyncio.sleep(0.1)
            await append_events(outbox, 30)
            await asyncio.sleep(0.3)
            assert outbox.stats().per_class[Stream.EVENTS].records == 30
            assert engine.progress().paused
            emu.set_online(False)
            engine.resume()
            await wait_for(lambda: engine.progress().link is LinkState.OFFLINE)
            assert outbox.stats().per_class[Stream.EVENTS].records == 30
            emu.set_online(True)
            engine.sync_now()
            await wait_for(drained(outbox, Stream.EVENTS))
            engine.set_bandwidth_cap(1_000_000)
            assert engine.progress().bandwidth_cap_bps == pytest.approx(1_000_000)


async def test_out_of_order_batches_are_not_lost(tmp_path: Path, outbox: Outbox) -> None:
    """Two PUTs in flight: the first fails (500), the second is stored.  The handshake's
    watermark then covers the failed one; the engine must still resend it."""
    failed: list[str] = []

    @web.middleware
    async def fail_first_put(
        request: web.Request, handler: Callable[..., object]
    ) -> web.StreamResponse:
        if request.method == "PUT" and not failed:
            failed.append(request.path)
            await request.read()
            await asyncio.sleep(0.2)  # let the second batch land first
            return web.json_response({"error": "internal", "detail": "boom"}, status=500)
        response = await handler(request)  # type: ignore[misc]
        assert isinstance(response, web.StreamResponse)
        return response

    seqs = await append_events(outbox, 200)
    async with running_ingest(tmp_path / "cloud", middlewares=[fail_first_put]) as cloud:
        async with engine_for(
            tmp_path, outbox, cloud.url, cloud.token, handshake_interval_s=0.01
        ) as (engine, _):
            await wait_for(drained(outbox, Stream.EVENTS))
        assert failed == [f"/v1/batches/{DEVICE}.events.{seqs[0]}-{seqs[99]}"]
        assert sorted(lake_seqs(cloud.settings.data_dir, Stream.EVENTS)) == seqs


async def test_delta_sync_does_not_ack_across_a_batch_the_cloud_never_got(
    tmp_path: Path,
) -> None:
    """The cloud holds seqs 101-200 of ours but not 1-100 (say the database was restored
    from a copy older than the pin of the batch that failed): its watermark is 200, and
    acking up to it would delete 100 records the cloud never got."""
    before = Outbox.open(tmp_path / "outbox", OUTBOX)
    await before.confirm_history(0)  # it synced before: its seqs are its own
    seqs = await append_events(before, 200)
    records = before.read(Stream.EVENTS, max_records=200)[100:]
    await before.close()
    outbox = Outbox.open(tmp_path / "outbox", OUTBOX)  # the restored copy starts
    try:
        async with running_ingest(tmp_path / "cloud") as cloud:
            batch = encode_records(Stream.EVENTS, records, device_id=DEVICE, site_id=SITE)
            assert await cloud.put_batch(batch.batch_id, batch.body) == 201
            async with engine_for(tmp_path, outbox, cloud.url, cloud.token):
                await wait_for(drained(outbox, Stream.EVENTS))
            assert sorted(lake_seqs(cloud.settings.data_dir, Stream.EVENTS)) == seqs
    finally:
        await outbox.close()
