"""Sync engine benchmark (issue 5): an emulated 2 Mbit/s link with 150 ms round trip.

The ingest service (``yardlink ingest serve``) and the link emulator
(``python -m sync.linkemu``) run as separate processes, so the CPU measured in
this process is the sync engine's (plus its outbox).  In one run:

1. **events before raw**: a backlog of events (50,000; --quick 5,000) and raw
   blobs (200 MB; --quick 16 MB) when the link comes up.  Every event must be
   delivered before the first raw byte, in <= 1.2x (event bytes on the wire /
   link rate) - the anchor is that ideal time, computed from the same run.
2. **bytes per event** on the wire vs the same events as JSON lines (<= 20%).
3. **raw goodput** (blob bytes acknowledged per second) vs the link rate (>= 90%),
   measured while the raw backlog drains, and **engine CPU** as % of one core
   over the same window (<= 25%).
4. **bytes resent after a cut**: a multi-chunk upload through an in-process
   emulator that cuts the connection mid-chunk; resent bytes vs the chunk size.

Run: ``python -m bench.sync [--quick]``; writes bench/results/sync.json.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import Row, command_for, parse_args, row, write_results
from sync.engine import SyncEngine
from sync.linkemu import Direction, LinkConditions, LinkEmulator
from sync.outbox import Outbox
from sync.protocol import Stream
from sync.settings import LinkSettings, OutboxSettings, SyncSettings
from tests.sync.ingest_server import (
    DEVICE,
    SITE,
    BlobDir,
    CloudProcess,
    event_payload,
)
from yardlink.localstack import free_port, wait_port

NAME = "sync"
LINK_BPS = 2_000_000
RTT_S = 0.150


class EmulatorProcess:
    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sync.linkemu", "--target", f"127.0.0.1:{target_port}"]
            + ["--listen", str(self.port), "--rate", str(LINK_BPS), "--rtt-ms", str(RTT_S * 1000)],
            stdout=subprocess.DEVNULL,
        )
        wait_port(self.port, self.proc)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def _settings(url: str, token: str, **overrides: object) -> SyncSettings:
    values: dict[str, object] = {
        "cloud_url": url,
        "token": token,
        "batch_max_records": 10_000,
        "batch_max_bytes": 16 << 20,
        "chunk_target_s": 4.0,
        "link": LinkSettings(backoff_initial_s=0.2, backoff_max_s=2.0, request_timeout_s=30),
    }
    values.update(overrides)
    return SyncSettings.model_validate(values)


async def backlog_run(
    work: Path, events: int, raw_bytes: int, goodput_s: float
) -> tuple[dict[str, float], list[bytes]]:
    """Phase 1-3: events and raw backlog at link-up; returns measurements."""
    cloud = CloudProcess(work / "cloud")
    emu = EmulatorProcess(cloud.port)
    outbox = Outbox.open(work / "outbox", OutboxSettings(min_free_disk_bytes=0))
    blobs = BlobDir(work / "blobs")
    payloads = [event_payload(i, plate_token=f"tok-{i % 5000:05d}") for i in range(events)]
    try:
        for start in range(0, events, 4096):
            await outbox.append_many(Stream.EVENTS, payloads[start : start + 4096])
        blob_size = 2 << 20
        for i in range(max(1, raw_bytes // blob_size)):
            ref = blobs.add(os.urandom(blob_size), seq=i + 1)
            await outbox.append_blob_ref(Stream.RAW_SAMPLED, ref)
        engine = SyncEngine(
            outbox,
            _settings(f"http://127.0.0.1:{emu.port}", cloud.token),
            device_id=DEVICE,
            site_id=SITE,
            blob_source=blobs,
            state_path=work / "sync-state.json",
        )
        started = time.monotonic()
        await engine.start()
        events_done = first_raw = None
        while first_raw is None:  # poll: when did events drain, when did raw start?
            progress = engine.progress()
            now = time.monotonic()
            if events_done is None and progress.classes[Stream.EVENTS].pending_records == 0:
                events_done = now
            raw_sent = progress.classes[Stream.RAW_SAMPLED].sent_bytes
            if progress.upload is not None or raw_sent > 0:
                first_raw = now  # conservative: the upload began (HEAD/POST), bytes follow
            await asyncio.sleep(0.005)
            if now - started > 600:
                raise RuntimeError("no raw upload within 600 s")
        event_wire = engine.progress().classes[Stream.EVENTS].sent_bytes
        # Goodput: blob bytes the server acknowledged, between the first and the last
        # acknowledgement (chunk boundary) seen in a window of goodput_s.
        marks: list[tuple[float, int]] = []
        cpu0, wall0 = time.process_time(), time.monotonic()
        while time.monotonic() - wall0 < goodput_s:
            acked = _raw_acked(engine)
            if not marks or acked != marks[-1][1]:
                marks.append((time.monotonic(), acked))
            await asyncio.sleep(0.02)
        cpu1, wall1 = time.process_time(), time.monotonic()
        marks = marks[1:]  # the first entry is the state at the window start, not a boundary
        if len(marks) < 3:
            raise RuntimeError("too few chunk acknowledgements in the goodput window")
        goodput_bps = (marks[-1][1] - marks[0][1]) * 8 / (marks[-1][0] - marks[0][0])
        await engine.close()
    finally:
        await outbox.close()
        emu.close()
        cloud.close()
    assert events_done is not None
    return {
        "events_s": events_done - started,
        "events_before_raw": float(events_done <= first_raw),
        "event_wire_bytes": float(event_wire),
        "goodput_bps": goodput_bps,
        "cpu_share": (cpu1 - cpu0) / (wall1 - wall0),
    }, payloads


def _raw_acked(engine: SyncEngine) -> int:
    """Raw bytes the server confirmed: finished blobs plus the current upload's offset."""
    progress = engine.progress()
    done = progress.classes[Stream.RAW_SAMPLED].sent_bytes - progress.resent_bytes
    return done + (progress.upload.offset if progress.upload is not None else 0)


async def resend_after_cut(work: Path, blob_mb: int) -> tuple[int, int]:
    """Phase 4: cut mid-chunk; returns (bytes resent, chunk size at the cut)."""
    cloud = CloudProcess(work / "cloud-cut")
    conditions = LinkConditions(rtt_s=RTT_S, rate_bps=LINK_BPS)
    outbox = Outbox.open(work / "outbox-cut", OutboxSettings(min_free_disk_bytes=0))
    blobs = BlobDir(work / "blobs-cut")
    try:
        async with LinkEmulator(("127.0.0.1", cloud.port), conditions) as emu:
            ref = blobs.add(os.urandom(blob_mb << 20))
            await outbox.append_blob_ref(Stream.RAW_SAMPLED, ref)
            engine = SyncEngine(
                outbox,
                _settings(emu.url, cloud.token, chunk_target_s=2.0),
                device_id=DEVICE,
                site_id=SITE,
                blob_source=blobs,
                state_path=work / "sync-state-cut.json",
            )
            await engine.start()
            while True:  # once the third chunk is under way, cut in the middle of the next
                upload = engine.progress().upload
                if upload is not None and upload.offset >= 2 * (64 << 10):
                    emu.cut_after(upload.chunk_bytes // 2, Direction.UP, min_up_bytes=1)
                    break
                await asyncio.sleep(0.01)
            while not emu.stats.cuts:
                await asyncio.sleep(0.005)
            chunk = engine.uploader.chunk_in_flight  # the chunk the cut hit
            while outbox.stats().per_class[Stream.RAW_SAMPLED].records:
                await asyncio.sleep(0.05)
            resent = engine.progress().resent_bytes
            await engine.close()
    finally:
        await outbox.close()
        cloud.close()
    return resent, chunk


def json_lines_bytes(payloads: list[bytes]) -> int:
    return sum(len(p) + 1 for p in payloads)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(NAME, argv)
    command = command_for(NAME, args.quick)
    events = 5_000 if args.quick else 50_000
    raw_bytes = (16 if args.quick else 200) << 20
    goodput_s = 20.0 if args.quick else 45.0
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        work = Path(tmp)
        measured, payloads = asyncio.run(backlog_run(work, events, raw_bytes, goodput_s))
        resent, chunk = asyncio.run(resend_after_cut(work, 3 if args.quick else 8))
    ideal_s = measured["event_wire_bytes"] * 8 / LINK_BPS
    json_bytes = json_lines_bytes(payloads)
    rows: list[Row] = [
        row(
            "events delivered before the first raw byte",
            measured["events_before_raw"],
            "bool",
            goal="1 (all events first)",
            command=command,
            met=measured["events_before_raw"] == 1.0,
        ),
        row(
            f"time to deliver {events} events after link-up",
            measured["events_s"],
            "s",
            anchor="event bytes on the wire / link rate",
            anchor_value=ideal_s,
            goal="<= 1.2x anchor",
            command=command,
            met=measured["events_s"] <= 1.2 * ideal_s,
        ),
        row(
            "wire bytes per event",
            measured["event_wire_bytes"] / events,
            "B",
            anchor="same events as JSON lines",
            anchor_value=json_bytes / events,
            goal="<= 0.2x anchor",
            command=command,
            met=measured["event_wire_bytes"] <= 0.2 * json_bytes,
        ),
        row(
            "raw goodput over the emulated link",
            measured["goodput_bps"],
            "bit/s",
            anchor="link rate",
            anchor_value=LINK_BPS,
            goal=">= 0.9x anchor",
            command=command,
            met=measured["goodput_bps"] >= 0.9 * LINK_BPS,
        ),
        row(
            "sync engine CPU while saturating the link",
            measured["cpu_share"] * 100,
            "% of a core",
            goal="<= 25",
            command=command,
            met=measured["cpu_share"] <= 0.25,
        ),
        row(
            "bytes resent after a mid-chunk cut",
            resent,
            "B",
            anchor="chunk size at the cut",
            anchor_value=chunk,
            goal="<= 1x anchor",
            command=command,
            met=resent <= chunk,
        ),
    ]
    write_results(NAME, rows, args.out)


if __name__ == "__main__":
    main()
