"""Batch ingest benchmark: records/s into the lake through ``PUT /v1/batches/{id}``.

The service runs as ``yardlink ingest serve`` in its own process (as deployed);
this process sends pre-encoded 10,000-record ``events`` batches (Parquet +
zstd, as the appliance sends them) over loopback HTTP with a few concurrent
connections, and counts records acknowledged per second (201 answers: each
batch validated, written to the Hive lake with fsync + rename, and recorded in
the SQLite catalog with ``synchronous=FULL``).

Anchor, measured in the same run on the same batches: a "lake write without
HTTP" -- ``pyarrow.parquet`` reading each body and writing it to a file on the
same disk (zstd, fsync), one after another.  A second row re-sends every batch
(the idempotent duplicate path a device hits after a lost ack).

    python -m bench.ingest_batches [--quick]

``measure_batch_ingest(quick)`` returns the rows so that ``bench/ingest.py``
can include them.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import pyarrow.parquet as pq

from bench._common import Row, command_for, parse_args, row, write_results
from cloud_ingest.catalog_sqlite import SqliteCatalog
from cloud_ingest.provisioning import add_device
from sync.protocol import BATCH_CONTENT_TYPE, Stream, make_batch_id
from sync.protocol.parquet import encode_batch

NAME = "ingest_batches"
RECORDS_PER_BATCH = 10_000
CONCURRENCY = 4
GOAL = 500_000.0


def _batches(count: int) -> list[tuple[str, bytes]]:
    base = 1_764_000_000.0
    batches = []
    for index in range(count):
        first = index * RECORDS_PER_BATCH + 1
        records = [
            {
                "device_id": "bench-01",
                "site_id": "yard-a",
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
                make_batch_id("bench-01", Stream.EVENTS, first, last),
                encode_batch(Stream.EVENTS, records),
            )
        )
    return batches


def _lake_write_anchor(batches: list[tuple[str, bytes]], out_dir: Path) -> float:
    """Records/s of pyarrow reading each body and writing it durably to disk."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for batch_id, body in batches:
        table = pq.read_table(io.BytesIO(body))
        path = out_dir / f"{batch_id}.parquet"
        with open(path, "wb") as sink:
            pq.write_table(table, sink, compression="zstd", compression_level=3)
            sink.flush()
            os.fsync(sink.fileno())
    return len(batches) * RECORDS_PER_BATCH / (time.perf_counter() - started)


def _start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``yardlink ingest serve --port 0``; its JSON log goes to a file we read the URL from."""
    yardlink = str(Path(sys.executable).parent / "yardlink")
    log_path = data_dir.parent / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [yardlink, "ingest", "serve", "--data-dir", str(data_dir), "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        for line in log_path.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("msg") == "listening":
                return process, str(entry["url"])
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"ingest server did not start: {log_path.read_text()[-500:]}")


async def _send(url: str, token: str, batches: list[tuple[str, bytes]], expect: int) -> float:
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for item in batches:
        queue.put_nowait(item)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": BATCH_CONTENT_TYPE}

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            batch_id, body = queue.get_nowait()
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


async def _provision(data_dir: Path) -> str:
    catalog = await SqliteCatalog.open(data_dir / "catalog.db")
    try:
        created = await add_device(catalog, "bench-01", "yard-a", actor="bench", now=time.time())
    finally:
        await catalog.close()
    return created.token


def measure_batch_ingest(quick: bool) -> list[Row]:
    """Rows: stored records/s, duplicate records/s, each against the lake-write anchor."""
    count = 8 if quick else 60
    batches = _batches(count)
    command = command_for(NAME, quick)
    with tempfile.TemporaryDirectory(prefix="yardlink-bench-") as tmp:
        root = Path(tmp)
        anchor = _lake_write_anchor(batches, root / "anchor")
        data_dir = root / "data"
        data_dir.mkdir()
        token = asyncio.run(_provision(data_dir))
        process, url = _start_server(data_dir)
        try:
            stored = asyncio.run(_send(url, token, batches, expect=201))
            duplicate = asyncio.run(_send(url, token, batches, expect=200))
        finally:
            process.terminate()
            process.wait(timeout=30)
    anchor_name = "pyarrow read+write+fsync, no HTTP"
    return [
        row(
            "batch_ingest_records_per_s",
            stored,
            "records/s",
            goal=">= 500,000 records/s",
            command=command,
            anchor=anchor_name,
            anchor_value=round(anchor, 1),
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
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(NAME, argv)
    write_results(NAME, measure_batch_ingest(args.quick), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
