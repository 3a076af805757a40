"""Sync engine benchmark (issues 5 and 24): raw goodput at the limit of three yard links.

The ingest service (``yardlink ingest serve``) and the link emulator
(``python -m sync.linkemu``) run as separate processes, so the CPU measured in
this process is the sync engine's (plus its outbox).  The emulator writes its
counters (bytes that crossed the wire, seconds online) to a file: every
goodput figure is measured there, not from the engine's own counters.

1. **DSL** (2 Mbit/s, 150 ms): a backlog of events (50,000; --quick 5,000) and
   raw blobs at link-up.  Every event must be delivered before the first raw
   byte, in <= 1.2x the time one plain upload of the same bytes takes through
   the same link in the same run (a tus creation-with-upload ``POST``: one round
   trip, the bytes' wire time, the service's fsync); bytes per event vs
   JSON lines; then **raw goodput** (bytes up the wire per second in a window
   while raw drains) vs the link rate (>= 0.95), and engine CPU.
2. **satellite** (20 Mbit/s, 600 ms, a 4 MiB TCP window as Linux autotunes it):
   raw goodput (>= 0.95) and engine CPU (<= 10% of a core).
3. **flapping DSL** (down 4 s in every 12 s): a raw backlog drained; blob bytes
   delivered (each blob's size once: resends and HTTP overhead do not count) per
   second vs the time-averaged capacity: the link rate x the seconds the
   emulator was online (about 2/3 of the wall time; nothing crosses while it is
   down, and that time is not in the capacity) / the wall time (>= 0.85), both
   from just before the engine starts to the moment the backlog is acked.
4. In 1-3, **events still go first**: bursts of 20 events while raw flows; the
   longest wait behind raw (latency minus the same burst's latency on the idle
   link, measured first in the same run) vs one chunk's time on the wire
   (``chunk_target_s``, what the raw chunks in flight add up to at most).
5. **bytes resent after a cut**: one blob uploaded clean, another cut mid-chunk;
   the difference of the bytes that crossed the emulator, vs the chunk the cut hit.

Run: ``python -m bench.sync [--quick]``; writes bench/results/sync.json.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench._common import Row, command_for, parse_args, row, write_results
from sync.cloud_client import CloudClient
from sync.engine import SyncEngine
from sync.linkemu import DEFAULT_WINDOW, Direction, LinkConditions, LinkEmulator
from sync.outbox import Outbox
from sync.protocol import TUS_VERSION, Stream, UploadMetadata
from sync.settings import OutboxSettings, SyncSettings
from sync.uploader import checksum_header, encode_metadata
from tests.sync.ingest_server import DEVICE, SITE, BlobDir, CloudProcess, event_payload
from yardlink.localstack import free_port, wait_port

NAME = "sync"
BLOB_BYTES = 2 << 20
CHUNK_TARGET_S = 4.0
BURST = 20  # events per probe


@dataclass(frozen=True)
class Link:
    name: str
    rate_bps: float
    rtt_s: float
    window_bytes: int = DEFAULT_WINDOW
    flap: tuple[float, float] | None = None  # (offline_s, online_s)


DSL = Link("2 Mbit/s, 150 ms", 2e6, 0.150)
SATELLITE = Link("20 Mbit/s, 600 ms", 20e6, 0.600, window_bytes=4 << 20)
FLAPPING = Link("2 Mbit/s, 150 ms, down 4 s in every 12 s", 2e6, 0.150, flap=(4.0, 8.0))


class EmulatorProcess:
    """``python -m sync.linkemu`` with ``--stats``: what crossed the wire, seconds online."""

    def __init__(self, target_port: int, link: Link, work: Path) -> None:
        self.port = free_port()
        self.stats_path = work / f"linkemu-{self.port}.json"
        flap = [] if link.flap is None else ["--flap", f"{link.flap[0]},{link.flap[1]}"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sync.linkemu", "--target", f"127.0.0.1:{target_port}"]
            + ["--listen", str(self.port), "--rate", str(link.rate_bps)]
            + ["--rtt-ms", str(link.rtt_s * 1000), "--window-bytes", str(link.window_bytes)]
            + ["--stats", str(self.stats_path), *flap],
            stdout=subprocess.DEVNULL,
        )
        wait_port(self.port, self.proc)

    def stats(self) -> dict[str, float]:
        for _ in range(100):
            try:
                stats: dict[str, float] = json.loads(self.stats_path.read_text())
                return stats
            except (FileNotFoundError, ValueError):
                time.sleep(0.02)
        raise RuntimeError(f"the link emulator wrote no stats to {self.stats_path}")

    async def fresh_stats(self) -> dict[str, float]:
        """Counters written after this call (at most 0.1 s old when read)."""
        asked = time.monotonic()
        while True:
            stats = self.stats()
            if stats["t"] >= asked:
                return stats
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def _settings(url: str, token: str, **overrides: object) -> SyncSettings:
    values: dict[str, object] = {
        "cloud_url": url,
        "token": token,
        "batch_max_records": 10_000,
        "batch_max_bytes": 16 << 20,
        "batch_max_age_s": 0.0,  # a probe's burst goes at once on the idle link too
        "chunk_target_s": CHUNK_TARGET_S,  # the link's settings: the defaults
    }
    values.update(overrides)
    return SyncSettings.model_validate(values)


class Yard:
    """One outbox, blob directory and engine factory behind one emulated link."""

    def __init__(self, work: Path, url: str, token: str) -> None:
        self.work, self.url, self.token = work, url, token
        self.outbox = Outbox.open(work / "outbox", OutboxSettings(min_free_disk_bytes=0))
        self.blobs = BlobDir(work / "blobs")
        self.next_event = 0

    def engine(self) -> SyncEngine:
        return SyncEngine(
            self.outbox,
            _settings(self.url, self.token),
            device_id=DEVICE,
            site_id=SITE,
            blob_source=self.blobs,
            state_path=self.work / "sync-state.json",
        )

    async def add_events(self, count: int) -> list[bytes]:
        payloads = [
            event_payload(i, plate_token=f"tok-{i % 5000:05d}")
            for i in range(self.next_event, self.next_event + count)
        ]
        self.next_event += count
        for start in range(0, count, 4096):
            await self.outbox.append_many(Stream.EVENTS, payloads[start : start + 4096])
        return payloads

    async def add_raw(self, total_bytes: int) -> int:
        count = max(1, total_bytes // BLOB_BYTES)
        for i in range(count):
            ref = self.blobs.add(os.urandom(BLOB_BYTES), seq=i + 1)
            await self.outbox.append_blob_ref(Stream.RAW_SAMPLED, ref)
        return count * BLOB_BYTES

    def pending(self, stream: Stream) -> int:
        return self.outbox.stats().per_class[stream].records

    async def burst_latency(self, engine: SyncEngine) -> float:
        """Append ``BURST`` events; seconds until the cloud acknowledged them all."""
        started = time.monotonic()
        await self.add_events(BURST)
        engine.notify()
        await until(lambda: self.pending(Stream.EVENTS) == 0, 120, "an event burst")
        return time.monotonic() - started

    async def idle_latency(self) -> float:
        """A burst's latency on the idle link (median of 3), by an engine of its own."""
        engine = self.engine()
        await engine.start()
        try:
            await until(lambda: engine.progress().last_handshake_at is not None, 60, "handshake")
            return statistics.median([await self.burst_latency(engine) for _ in range(3)])
        finally:
            await engine.close()


async def plain_upload_s(yard: Yard, nbytes: int) -> float:
    """Seconds one plain upload of ``nbytes`` takes through the same link, the link
    otherwise idle (median of 3): a tus creation-with-upload ``POST`` on a fresh
    connection, the simplest request that carries the bytes and is answered once the
    service stored them (one round trip, the bytes' wire time, the service's fsync)."""
    times = []
    for _ in range(3):
        body = os.urandom(nbytes)
        sha = hashlib.sha256(body).hexdigest()
        meta = UploadMetadata(sha256=sha, stream=Stream.RAW_SAMPLED, filename=f"{sha}.bin")
        client = CloudClient(yard.url, yard.token)
        try:
            started = time.monotonic()
            await client.request(
                "POST",
                "/v1/uploads/",
                headers={
                    "Tus-Resumable": TUS_VERSION,
                    "Upload-Length": str(nbytes),
                    "Upload-Metadata": encode_metadata(meta),
                    "Content-Type": "application/offset+octet-stream",
                    "Upload-Checksum": checksum_header(body),
                },
                body=body,
                ok=(201,),
            )
            times.append(time.monotonic() - started)
        finally:
            await client.close()
    return statistics.median(times)


async def until(done: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not done within {timeout_s} s")
        await asyncio.sleep(0.005)


async def probe_waits(yard: Yard, engine: SyncEngine, idle_s: float, probes: int) -> float:
    """The longest wait of an event burst behind raw bytes (latency minus idle latency)."""
    waits = []
    for _ in range(probes):
        await asyncio.sleep(1.0)
        if not yard.pending(Stream.RAW_SAMPLED):
            raise RuntimeError("the raw backlog drained before the event probes ended")
        waits.append(await yard.burst_latency(engine) - idle_s)
    return max(waits)


async def goodput_window(
    emu: EmulatorProcess, engine: SyncEngine, yard: Yard, seconds: float
) -> tuple[float, float]:
    """(bits per second up the wire, engine CPU share) over ``seconds`` of raw."""
    first = await emu.fresh_stats()
    cpu0 = time.process_time()
    await asyncio.sleep(seconds)
    last = await emu.fresh_stats()
    cpu1 = time.process_time()
    if not yard.pending(Stream.RAW_SAMPLED):
        raise RuntimeError("the raw backlog drained inside the goodput window")
    wall = last["t"] - first["t"]
    return (last["up"] - first["up"]) * 8 / wall, (cpu1 - cpu0) / wall


async def steady_run(
    work: Path, link: Link, events: int, raw_bytes: int, window_s: float
) -> dict[str, float]:
    """DSL or satellite: events and raw at link-up, then goodput, then event probes."""
    cloud = CloudProcess(work / "cloud")
    emu = EmulatorProcess(cloud.port, link, work)
    yard = Yard(work, f"http://127.0.0.1:{emu.port}", cloud.token)
    result: dict[str, float] = {}
    try:
        result["idle_burst_s"] = idle_s = await yard.idle_latency()
        payloads = await yard.add_events(events)
        await yard.add_raw(raw_bytes)
        engine = yard.engine()
        started = time.monotonic()
        await engine.start()
        events_done = first_raw = None
        while first_raw is None:  # poll: when did events drain, when did raw start?
            now = time.monotonic()
            if events_done is None and yard.pending(Stream.EVENTS) == 0:
                events_done = now
            if engine.uploader.uploads or engine.progress().classes[Stream.RAW_SAMPLED].sent_bytes:
                first_raw = now  # conservative: the upload began (HEAD/POST), bytes follow
            await asyncio.sleep(0.005)
            if now - started > 600:
                raise RuntimeError("no raw upload within 600 s")
        assert events_done is not None
        result["events_s"] = events_done - started
        result["events_before_raw"] = float(events_done <= first_raw)
        result["event_wire_bytes"] = float(engine.progress().classes[Stream.EVENTS].sent_bytes)
        result["json_bytes"] = float(sum(len(p) + 1 for p in payloads))
        await asyncio.sleep(4.0)  # the chunk sizes and uploads in flight settle
        result["goodput_bps"], result["cpu_share"] = await goodput_window(
            emu, engine, yard, window_s
        )
        result["event_wait_s"] = await probe_waits(yard, engine, idle_s, 5)
        await engine.close()
        result["plain_upload_s"] = await plain_upload_s(yard, int(result["event_wire_bytes"]))
    finally:
        await yard.outbox.close()
        emu.close()
        cloud.close()
    return result


async def flapping_run(work: Path, link: Link, raw_bytes: int) -> dict[str, float]:
    """A raw backlog drained over a flapping link; event bursts while it is online."""
    cloud = CloudProcess(work / "cloud-flap")
    emu = EmulatorProcess(cloud.port, link, work)
    (work / "flap").mkdir(exist_ok=True)
    yard = Yard(work / "flap", f"http://127.0.0.1:{emu.port}", cloud.token)
    try:
        delivered = await yard.add_raw(raw_bytes)
        engine = yard.engine()
        first = await emu.fresh_stats()
        await engine.start()
        drained = asyncio.create_task(drained_stats(emu, yard))
        waits: list[float] = []
        while not drained.done():
            await asyncio.wait({drained}, timeout=2.0)
            before = emu.stats()
            if not before["online_s"] or drained.done():
                continue
            latency = await yard.burst_latency(engine)
            after = emu.stats()
            online = after["online_s"] - before["online_s"]
            if after["cuts"] == before["cuts"] and online >= after["t"] - before["t"] - 0.2:
                waits.append(latency)  # the link stayed up all through this burst
        last = await drained
        await engine.close()
    finally:
        await yard.outbox.close()
        emu.close()
        cloud.close()
    online_s = last["online_s"] - first["online_s"]
    wall_s = last["t"] - first["t"]
    return {
        "goodput_bps": delivered * 8 / wall_s,
        "capacity_bps": link.rate_bps * online_s / wall_s,
        "wire_bps": (last["up"] - first["up"]) * 8 / wall_s,
        "latencies": float(len(waits)),
        "event_latency_max_s": max(waits) if waits else float("nan"),
    }


async def drained_stats(emu: EmulatorProcess, yard: Yard) -> dict[str, float]:
    """The emulator's counters when the raw backlog is acknowledged (polled every 20 ms,
    so the capacity counted ends with the last delivery, not a probe later)."""
    while yard.pending(Stream.RAW_SAMPLED):
        await asyncio.sleep(0.02)
    return await emu.fresh_stats()


async def resend_after_cut(work: Path, blob_mb: int) -> tuple[int, int]:
    """One blob clean, one of the same size cut mid-chunk: (bytes resent on the wire,
    the chunk the cut hit), both counted at the in-process emulator."""
    cloud = CloudProcess(work / "cloud-cut")
    conditions = LinkConditions(rtt_s=DSL.rtt_s, rate_bps=DSL.rate_bps)
    (work / "cut").mkdir()
    try:
        async with LinkEmulator(("127.0.0.1", cloud.port), conditions) as emu:
            yard = Yard(work / "cut", emu.url, cloud.token)
            engine = yard.engine()
            await engine.start()
            try:
                up = []
                for cut in (False, True):
                    await until(lambda: engine.progress().last_handshake_at is not None, 60, "hs")
                    before = emu.stats.bytes[Direction.UP]
                    ref = yard.blobs.add(os.urandom(blob_mb << 20))
                    await yard.outbox.append_blob_ref(Stream.RAW_SAMPLED, ref)
                    engine.notify()
                    if cut:  # once two chunks are in, cut in the middle of the next
                        await until(_past_two_chunks(engine), 120, "two chunks")
                        emu.cut_after(engine.uploader.chunk_in_flight // 2, Direction.UP)
                        await until(lambda: emu.stats.cuts > 0, 120, "the cut")
                        chunk = engine.uploader.chunk_in_flight  # the chunk the cut hit
                    await until(lambda: yard.pending(Stream.RAW_SAMPLED) == 0, 300, "upload")
                    up.append(emu.stats.bytes[Direction.UP] - before)
            finally:
                await engine.close()
                await yard.outbox.close()
    finally:
        cloud.close()
    return up[1] - up[0], chunk


def _past_two_chunks(engine: SyncEngine) -> Callable[[], bool]:
    def done() -> bool:
        upload = engine.uploader.current
        return upload is not None and upload.offset >= 2 * (64 << 10) and upload.chunk_bytes > 0

    return done


def rows_for(
    args_quick: bool,
    dsl: dict[str, float],
    sat: dict[str, float],
    flap: dict[str, float],
    resent: int,
    chunk: int,
    events: int,
) -> list[Row]:
    command = command_for(NAME, args_quick)
    plain_s = dsl["plain_upload_s"]
    rows: list[Row] = [
        row(
            "events delivered before the first raw byte",
            dsl["events_before_raw"],
            "bool",
            goal="1 (all events first)",
            command=command,
            met=dsl["events_before_raw"] == 1.0,
        ),
        row(
            f"time to deliver {events} events after link-up",
            dsl["events_s"],
            "s",
            anchor="one plain upload of the same bytes through the same link (tus POST)",
            anchor_value=plain_s,
            goal="<= 1.2x anchor",
            command=command,
            met=dsl["events_s"] <= 1.2 * plain_s,
        ),
        row(
            "wire bytes per event",
            dsl["event_wire_bytes"] / events,
            "B",
            anchor="same events as JSON lines",
            anchor_value=dsl["json_bytes"] / events,
            goal="<= 0.2x anchor",
            command=command,
            met=dsl["event_wire_bytes"] <= 0.2 * dsl["json_bytes"],
        ),
    ]
    for link, measured in ((DSL, dsl), (SATELLITE, sat)):
        rows.append(
            row(
                f"raw goodput, {link.name} (bytes up the wire at the emulator)",
                measured["goodput_bps"],
                "bit/s",
                anchor="link rate",
                anchor_value=link.rate_bps,
                goal=">= 0.95x anchor",
                command=command,
                met=measured["goodput_bps"] >= 0.95 * link.rate_bps,
            )
        )
    rows.append(
        row(
            f"raw goodput, {FLAPPING.name} (blob bytes delivered)",
            flap["goodput_bps"],
            "bit/s",
            anchor="time-averaged capacity (rate x time online, at the emulator)",
            anchor_value=flap["capacity_bps"],
            goal=">= 0.85x anchor",
            command=command,
            met=flap["goodput_bps"] >= 0.85 * flap["capacity_bps"],
        )
    )
    for link, measured in ((DSL, dsl), (SATELLITE, sat)):
        rows.append(
            row(
                f"longest wait of an event burst behind raw, {link.name}",
                measured["event_wait_s"],
                "s",
                anchor="one chunk's time on the wire (chunk_target_s)",
                anchor_value=CHUNK_TARGET_S,
                goal="<= 1x anchor",
                command=command,
                met=measured["event_wait_s"] <= CHUNK_TARGET_S,
            )
        )
    flap_wait = flap["event_latency_max_s"] - dsl["idle_burst_s"]
    rows.append(
        row(
            f"longest wait of an event burst behind raw, {FLAPPING.name} (link up all through)",
            flap_wait,
            "s",
            anchor="one chunk's time on the wire (chunk_target_s)",
            anchor_value=CHUNK_TARGET_S,
            goal="<= 1x anchor",
            command=command,
            met=flap["latencies"] > 0 and flap_wait <= CHUNK_TARGET_S,
        )
    )
    rows += [
        row(
            f"sync engine CPU while saturating {DSL.name}",
            dsl["cpu_share"] * 100,
            "% of a core",
            goal="<= 25",
            command=command,
            met=dsl["cpu_share"] <= 0.25,
        ),
        row(
            f"sync engine CPU while saturating {SATELLITE.name}",
            sat["cpu_share"] * 100,
            "% of a core",
            goal="<= 10",
            command=command,
            met=sat["cpu_share"] <= 0.10,
        ),
        row(
            "bytes resent after a mid-chunk cut (counted on the wire at the emulator)",
            resent,
            "B",
            anchor="the chunk the cut hit",
            anchor_value=chunk,
            goal="<= 1x anchor",
            command=command,
            met=resent <= chunk,
        ),
    ]
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(NAME, argv)
    quick = args.quick
    events = 5_000 if quick else 50_000
    window_s = 12.0 if quick else 30.0
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        work = Path(tmp)
        (work / "dsl").mkdir()
        (work / "sat").mkdir()
        dsl = asyncio.run(
            steady_run(work / "dsl", DSL, events, (12 if quick else 24) << 20, window_s)
        )
        sat = asyncio.run(
            steady_run(work / "sat", SATELLITE, 1_000, (120 if quick else 200) << 20, window_s)
        )
        flap = asyncio.run(flapping_run(work, FLAPPING, (6 if quick else 16) << 20))
        resent, chunk = asyncio.run(resend_after_cut(work, 3 if quick else 8))
    write_results(NAME, rows_for(quick, dsl, sat, flap, resent, chunk, events), args.out)


if __name__ == "__main__":
    main()
