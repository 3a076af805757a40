"""Batch ingest benchmark: records/s into the lake through ``PUT /v1/batches/{id}``.

The service runs as ``yardlink ingest serve`` in its own process (as deployed);
this process sends pre-encoded 10,000-record ``events`` batches (Parquet +
zstd, as the appliance sends them) over loopback HTTP with 4 concurrent
connections, and counts records acknowledged per second (201 answers: each
batch decoded and validated, written to the Hive lake with fsync + rename +
directory fsync, and recorded in the SQLite catalog with ``synchronous=FULL``,
batches arriving together sharing one commit).  10,000 records is the sync
engine's ``batch_max_records``: the batch size of a backlog.

Anchor, measured in the same run on the same bodies: what a peer that trusts
its input would do to store them -- the same bytes written unchanged to files
on the same disk, each fsync'd, by 4 writer threads (one per connection), no
HTTP, no decoding, no rename.  Server and anchor take turns (3 rounds, 2 with
--quick, the order reversed every other round, fresh directories each round)
and the medians are compared.  A second row re-sends every batch (the
idempotent duplicate path a device hits after a lost ack).  For the record:
the server process's CPU per stored batch (steadier than rates on a loaded
machine), the rate that CPU allows at best (every core of the machine busy
storing and nothing else, so no wait on a disk or a client: the ceiling of the
ratio here), and the service's batch checks alone (``validate_batch``: one pass
that decodes and checks, one thread, CPU time) on the same bodies: the rate
storing could not exceed even with free HTTP and disk.

    python -m bench.ingest_batches [--quick]

``measure_batch_ingest(quick)`` returns the rows so that ``bench/ingest.py``
can include them.
"""

from __future__ import annotations

import asyncio
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil

from bench._common import Row, command_for, parse_args, row, write_results
from bench.tus_servers import DEVICE_ID, SITE_ID, start_deployed_server
from cloud_ingest.batch_validation import validate_batch
from sync.protocol import BATCH_CONTENT_TYPE, Stream, make_batch_id, parse_batch_id
from sync.protocol.parquet import encode_batch

NAME = "ingest_batches"
RECORDS_PER_BATCH = 10_000
CONCURRENCY = 4
GOAL = 500_000.0
RATIO_GOAL = 0.7


def _batches(count: int) -> list[tuple[str, bytes]]:
    base = 1_764_000_000.0
    batches = []
    for index in range(count):
        first = index * RECORDS_PER_BATCH + 1
        records = [
            {
                "device_id": DEVICE_ID,
                "site_id": SITE_ID,
                "seq": seq,
                "event_time": base + seq * 0.01,
                "model_name": "ppocr",
                "model_version": "4.0",
                "camera_id": f"cam-{seq % 4}",
                "task": "gate_ocr",
                "latency_ms": 10.0 + (seq % 50),
                "sla_violated": seq % 97 == 0,
                "results": [
                    {
                        "kind": "container_code",
                        "value": f"MSKU{seq % 10_000_000:07d}",
                        "confidence": 0.9,
                        "valid": True,
                        "box": [10, 20, 300, 80],
                    }
                ],
                "raw_sha256": None,
            }
            for seq in range(first, first + RECORDS_PER_BATCH)
        ]
        last = first + RECORDS_PER_BATCH - 1
        batches.append(
            (
                make_batch_id(DEVICE_ID, Stream.EVENTS, first, last),
                encode_batch(Stream.EVENTS, records),
            )
        )
    return batches


async def _send(url: str, token: str, batches: list[tuple[str, bytes]], expect: int) -> float:
    pending: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for item in batches:
        pending.put_nowait(item)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": BATCH_CONTENT_TYPE}

    async def worker(session: aiohttp.ClientSession) -> None:
        while not pending.empty():
            batch_id, body = pending.get_nowait()
            async with session.put(
                f"{url}/v1/batches/{batch_id}", data=body, headers=headers
            ) as response:
                await response.read()
                if response.status != expect:
                    raise RuntimeError(f"{batch_id}: HTTP {response.status}")

    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    return len(batches) * RECORDS_PER_BATCH / elapsed


@dataclass(frozen=True, slots=True)
class _Round:
    anchor: float  # records/s
    stored: float
    duplicate: float
    stored_cpu_ms: float  # the server process's user+system CPU per stored batch


def _fsync_writers_anchor(batches: list[tuple[str, bytes]], out_dir: Path) -> float:
    """Records/s of ``CONCURRENCY`` threads writing the bodies unchanged, each fsync'd."""
    out_dir.mkdir(parents=True, exist_ok=True)
    work: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
    for item in batches:
        work.put(item)

    def writer() -> None:
        while True:
            try:
                batch_id, body = work.get_nowait()
            except queue.Empty:
                return
            fd = os.open(out_dir / f"{batch_id}.parquet", os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)

    threads = [threading.Thread(target=writer) for _ in range(CONCURRENCY)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(batches) * RECORDS_PER_BATCH / (time.perf_counter() - started)


def _one_round(batches: list[tuple[str, bytes]], root: Path, *, anchor_first: bool) -> _Round:
    anchor = _fsync_writers_anchor(batches, root / "anchor") if anchor_first else 0.0
    server = start_deployed_server(root / "data")
    try:
        process = psutil.Process(server.process.pid)
        cpu_before = sum(process.cpu_times()[:2])
        stored = asyncio.run(_send(server.url, server.token, batches, expect=201))
        stored_cpu_ms = (sum(process.cpu_times()[:2]) - cpu_before) / len(batches) * 1e3
        duplicate = asyncio.run(_send(server.url, server.token, batches, expect=200))
    finally:
        server.process.terminate()
        server.process.wait(timeout=30)
    if not anchor_first:
        anchor = _fsync_writers_anchor(batches, root / "anchor")
    return _Round(anchor, stored, duplicate, stored_cpu_ms)


def _validation_ceiling(batches: list[tuple[str, bytes]]) -> float:
    """Records/s of the service's batch checks alone (``validate_batch``: one pass
    that decodes and checks, in this process, one thread, CPU time): how fast
    storing could be with free HTTP and disk."""
    started = time.process_time()
    for batch_id, body in batches:
        validate_batch(parse_batch_id(batch_id), SITE_ID, body)
    return len(batches) * RECORDS_PER_BATCH / (time.process_time() - started)


def measure_batch_ingest(quick: bool) -> list[Row]:
    """Rows: stored records/s (against the anchor, and absolute), duplicate records/s,
    and the ceiling that validation alone sets."""
    count, rounds = (20, 2) if quick else (200, 3)
    batches = _batches(count)
    command = command_for(NAME, quick)
    results = []
    for index in range(rounds):
        with tempfile.TemporaryDirectory(prefix="yardlink-bench-") as tmp:
            results.append(_one_round(batches, Path(tmp), anchor_first=index % 2 == 0))
        print(f"  batches round {index}: {results[-1]}", file=sys.stderr)
    anchor = statistics.median(r.anchor for r in results)
    stored = statistics.median(r.stored for r in results)
    duplicate = statistics.median(r.duplicate for r in results)
    stored_cpu_ms = statistics.median(r.stored_cpu_ms for r in results)
    anchor_name = f"the same bodies written unchanged, fsync'd, by {CONCURRENCY} threads, no HTTP"
    ceiling = _validation_ceiling(batches)
    cores = os.cpu_count() or 1
    cpu_bound = cores * 1e3 / stored_cpu_ms * RECORDS_PER_BATCH
    return [
        row(
            "batch_ingest_records_per_s",
            stored,
            "records/s",
            goal=f">= {RATIO_GOAL}x the anchor (median of {rounds} interleaved rounds)",
            command=command,
            anchor=anchor_name,
            anchor_value=round(anchor, 1),
            met=stored >= RATIO_GOAL * anchor,
        ),
        row(
            "batch_ingest_records_per_s_absolute",
            stored,
            "records/s",
            goal=">= 500,000 records/s",
            command=command,
            met=stored >= GOAL,
        ),
        row(
            "batch_duplicate_records_per_s",
            duplicate,
            "records/s",
            goal="idempotent re-send at least as fast as storing",
            command=command,
            anchor=anchor_name,
            anchor_value=round(anchor, 1),
            met=duplicate >= stored,
        ),
        row(
            "batch_ingest_server_cpu_ms_per_batch",
            stored_cpu_ms,
            "CPU ms",
            goal=(
                f"info: the server process's user+system CPU per stored "
                f"{RECORDS_PER_BATCH:,}-record batch (median)"
            ),
            command=command,
        ),
        row(
            "batch_ingest_cpu_ceiling_records_per_s",
            cpu_bound,
            "records/s",
            goal=(
                f"info: the most the server's CPU per stored batch allows on this "
                f"machine's {cores} cores, all storing and nothing else"
            ),
            command=command,
            anchor=anchor_name,
            anchor_value=round(anchor, 1),
        ),
        row(
            "batch_validation_records_per_s",
            ceiling,
            "records/s",
            goal="info: decode + validate alone, one thread, CPU time (a ceiling for storing)",
            command=command,
            anchor=anchor_name,
            anchor_value=round(anchor, 1),
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(NAME, argv)
    write_results(NAME, measure_batch_ingest(args.quick), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
