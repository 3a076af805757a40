"""Cloud ingest benchmark: tus upload throughput and memory (+ batch ingest rows).

* tus PATCH throughput over loopback, every chunk with ``Upload-Checksum:
  sha256``, 1 MiB and 8 MiB chunks, 16 concurrent uploads; anchor in the same
  run: the reference Node.js ``@tus/server`` + ``@tus/file-store`` under the
  identical load (the benchmark stops, exit 2, when node/npm cannot run it); each
  server runs 3 times (1 with --quick), the order reversed every other round,
  and the medians are compared.  Note the anchor does less work: @tus/server
  2.x ignores ``Upload-Checksum`` and the file store does not fsync, while ours
  verifies every chunk, fsyncs every PATCH and hashes each completed upload
  into the blob store.  An informational row compares with the same node
  server fsyncing each PATCH before its 204 (still without checksums).
* memory: one large upload (2 GiB, 256 MiB with --quick) in 8 MiB chunks; the
  server process's peak RSS is sampled with psutil; the goal is that it grows
  by less than two chunks (one body buffer plus bookkeeping).

Each measurement is a function ``(quick) -> list[Row]`` in ``MEASUREMENTS``;
the batch ingest rows (``bench/ingest_batches.py``) are included when present.

    python -m bench.ingest [--quick]
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import aiohttp
import psutil
from yarl import URL

from bench._common import Row, command_for, parse_args, row, write_results
from bench.tus_servers import (
    AnchorUnavailable,
    node_anchor_problem,
    start_node_server,
    start_our_server,
)

NAME = "ingest"
CONCURRENCY = 16
MiB = 1 << 20
_ANCHOR = "@tus/server 2.4.5 + @tus/file-store (node)"


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


async def _upload(
    session: aiohttp.ClientSession, base: str, chunk: bytes, count: int, checksum: str, meta: str
) -> None:
    """One upload of ``count`` copies of ``chunk``, each PATCH checksummed."""
    headers = {"Tus-Resumable": "1.0.0", "Authorization": "Bearer bench"}
    create = {**headers, "Upload-Length": str(len(chunk) * count), "Upload-Metadata": meta}
    async with session.post(f"{base}/v1/uploads/", headers=create) as r:
        if r.status != 201:
            raise RuntimeError(f"create answered {r.status}: {await r.text()}")
        url = str(r.url.join(URL(r.headers["Location"])))
    offset = 0
    for _ in range(count):
        patch = {
            **headers,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
            "Upload-Checksum": checksum,
        }
        async with session.patch(url, data=chunk, headers=patch) as r:
            if r.status != 204:
                raise RuntimeError(f"PATCH answered {r.status}: {await r.text()}")
        offset += len(chunk)


async def _load(port: int, chunk: bytes, chunks_per_upload: int, uploads: int) -> float:
    """Run ``uploads`` concurrent uploads; return MB/s (10^6 bytes)."""
    checksum = f"sha256 {_b64(hashlib.sha256(chunk).digest())}"
    whole = hashlib.sha256()
    for _ in range(chunks_per_upload):
        whole.update(chunk)
    meta = f"sha256 {_b64(whole.hexdigest().encode())},stream {_b64(b'raw_frames')}"
    base = f"http://127.0.0.1:{port}"
    connector = aiohttp.TCPConnector(limit=uploads)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(
            *(
                _upload(session, base, chunk, chunks_per_upload, checksum, meta)
                for _ in range(uploads)
            )
        )
        elapsed = time.perf_counter() - started
    return len(chunk) * chunks_per_upload * uploads / elapsed / 1e6


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _PeakRss:
    """Samples a process's RSS every 20 ms in a thread; ``peak`` in bytes."""

    def __init__(self, pid: int) -> None:
        self._proc = psutil.Process(pid)
        self.baseline = self._proc.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, self._proc.memory_info().rss)
            except psutil.Error:
                return

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _run_against(
    start: Callable[[Path], tuple[subprocess.Popen[bytes], int]],
    chunk: bytes,
    chunks_per_upload: int,
    uploads: int,
) -> tuple[float, int, int]:
    """(MB/s, baseline RSS, peak RSS) of one load against a fresh server."""
    with tempfile.TemporaryDirectory(prefix="bench-tus-") as tmp:
        proc, port = start(Path(tmp))
        try:
            with _PeakRss(proc.pid) as rss:
                rate = asyncio.run(_load(port, chunk, chunks_per_upload, uploads))
            return rate, rss.baseline, rss.peak
        finally:
            _stop(proc)


_Starter = Callable[[Path], tuple[subprocess.Popen[bytes], int]]


def _interleaved(
    starters: dict[str, _Starter],
    chunk: bytes,
    count: int,
    repeats: int,
) -> dict[str, float]:
    """Median MB/s per server over ``repeats`` rounds, the order reversed every other round.

    The machine is shared, so a single run of each server in a fixed order
    mostly measures what else ran at the time; interleaving gives both the
    same conditions.
    """
    rates: dict[str, list[float]] = {name: [] for name in starters}
    names = list(starters)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            rates[name].append(_run_against(starters[name], chunk, count, CONCURRENCY)[0])
    return {name: statistics.median(r) for name, r in rates.items()}


def measure_tus_throughput(quick: bool) -> list[Row]:
    rows = []
    per_upload = (16 if quick else 64) * MiB
    repeats = 1 if quick else 3
    starters: dict[str, _Starter] = {
        "ours": start_our_server,
        "node": start_node_server,
        "node_fsync": partial(start_node_server, fsync=True),
    }
    for chunk_mib in (1, 8):
        chunk = os.urandom(chunk_mib * MiB)
        count = per_upload // len(chunk)
        rates = _interleaved(starters, chunk, count, repeats)
        ours, node, node_fsync = rates["ours"], rates["node"], rates["node_fsync"]
        metric = (
            f"tus PATCH throughput, sha256 checksums, {chunk_mib} MiB chunks, "
            f"{CONCURRENCY} concurrent uploads"
        )
        rows.append(
            row(
                metric,
                ours,
                "MB/s",
                goal=f">= 1.0x the reference node server (median of {repeats} interleaved runs)",
                command=command_for(NAME, quick),
                anchor=_ANCHOR,
                anchor_value=round(node, 4),
                met=ours >= node,
            )
        )
        rows.append(
            row(
                f"{metric}, vs node with fsync",
                ours,
                "MB/s",
                goal="info: the anchor fsyncing each PATCH before its 204, as ours does",
                command=command_for(NAME, quick),
                anchor=f"{_ANCHOR}, fsync per PATCH",
                anchor_value=round(node_fsync, 4),
            )
        )
    return rows


def measure_tus_memory(quick: bool) -> list[Row]:
    chunk = os.urandom(8 * MiB)
    count = (256 if quick else 2048) * MiB // len(chunk)
    ours = _run_against(start_our_server, chunk, count, 1)
    node = _run_against(start_node_server, chunk, count, 1)
    _, baseline, peak = ours
    size = f"{count * len(chunk) // MiB} MiB upload in 8 MiB chunks"
    return [
        row(
            f"tus server peak RSS, one {size}",
            peak / MiB,
            "MiB",
            goal="grows < 2 chunks over the idle server",
            command=command_for(NAME, quick),
            anchor=_ANCHOR,
            anchor_value=round(node[2] / MiB, 4),
            met=(peak - baseline) < 2 * len(chunk),
        ),
        row(
            f"tus server RSS growth over idle, one {size}",
            (peak - baseline) / MiB,
            "MiB",
            goal="< 16 MiB (two chunks)",
            command=command_for(NAME, quick),
            anchor=_ANCHOR,
            anchor_value=round((node[2] - node[1]) / MiB, 4),
            met=(peak - baseline) < 2 * len(chunk),
        ),
    ]


def _batch_measurements() -> list[Callable[[bool], list[Row]]]:
    try:
        from bench.ingest_batches import measure_batch_ingest
    except ImportError:
        return []
    return [measure_batch_ingest]


MEASUREMENTS: list[Callable[[bool], list[Row]]] = [
    measure_tus_throughput,
    measure_tus_memory,
    *_batch_measurements(),
]


def main(argv: list[str] | None = None) -> int:
    """Exit 2, writing no results, when the anchor cannot run (checked before any load)."""
    args = parse_args(NAME, argv)
    rows: list[Row] = []
    try:
        problem = node_anchor_problem()
        if problem is not None:
            raise AnchorUnavailable(problem)
        for measure in MEASUREMENTS:
            rows.extend(measure(args.quick))
    except AnchorUnavailable as exc:
        print(f"bench.{NAME}: the anchor cannot run, no results written: {exc}", file=sys.stderr)
        return 2
    write_results(NAME, rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
