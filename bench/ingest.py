"""Cloud ingest benchmark: tus upload throughput and memory (+ batch ingest rows).

* tus PATCH throughput over loopback of the service as deployed (``yardlink
  ingest serve`` in its own process: its own event loop, every middleware,
  bearer tokens checked against the catalog, catalog rows written when an
  upload completes), every chunk with ``Upload-Checksum: sha256``, 1 MiB and
  8 MiB chunks, 16 concurrent uploads of distinct content (each upload's first
  chunk carries its own tag, so every upload is its own blob); anchor in the same
  run: the reference Node.js ``@tus/server`` + ``@tus/file-store`` under the
  identical load (the benchmark stops, exit 2, when node/npm cannot run it);
  each server runs 3 times (2 with --quick), the order reversed every other
  round, and the medians are compared.  Note the anchor does less work:
  @tus/server 2.x ignores ``Upload-Checksum`` and the file store does not
  fsync, while ours verifies every chunk, fsyncs every PATCH, hashes each
  completed upload into the blob store and records it in the catalog.  An
  informational row compares with the same node server fsyncing each PATCH
  before its 204 (still without checksums).
* memory: one large upload (2 GiB, 256 MiB with --quick) in 8 MiB chunks; the
  deployed server process's peak RSS is sampled with psutil; the goal is that it
  grows by less than two chunks (one body buffer plus bookkeeping).

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
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import aiohttp
import psutil
from yarl import URL

from bench._common import Row, command_for, parse_args, row, write_results
from bench.tus_servers import (
    AnchorUnavailable,
    RunningServer,
    node_anchor_problem,
    start_deployed_server,
    start_node_server,
)

NAME = "ingest"
CONCURRENCY = 16
MiB = 1 << 20
_ANCHOR = "@tus/server 2.4.5 + @tus/file-store (node)"


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


@dataclass(frozen=True, slots=True)
class _Upload:
    """One upload's bytes: a tagged first chunk, then ``rest`` copies of the common chunk."""

    first: bytes
    rest: int
    meta: str  # Upload-Metadata: the whole upload's sha256, a raw stream, a seq
    first_checksum: str

    @property
    def length(self) -> int:
        return len(self.first) * (self.rest + 1)


def _checksum(chunk: bytes) -> str:
    return f"sha256 {_b64(hashlib.sha256(chunk).digest())}"


def _uploads(chunk: bytes, chunks_per_upload: int, count: int) -> list[_Upload]:
    """``count`` uploads of distinct content (each its own blob, its own catalog row)."""
    uploads = []
    for index in range(count):
        first = index.to_bytes(8, "big") + chunk[8:]
        whole = hashlib.sha256(first)
        for _ in range(chunks_per_upload - 1):
            whole.update(chunk)
        meta = (
            f"sha256 {_b64(whole.hexdigest().encode())},stream {_b64(b'raw_sampled')},"
            f"seq {_b64(str(index + 1).encode())}"
        )
        uploads.append(_Upload(first, chunks_per_upload - 1, meta, _checksum(first)))
    return uploads


async def _upload(
    session: aiohttp.ClientSession, server: RunningServer, upload: _Upload, chunk: bytes
) -> None:
    """One upload, each PATCH checksummed."""
    headers = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {server.token}"}
    create = {**headers, "Upload-Length": str(upload.length), "Upload-Metadata": upload.meta}
    async with session.post(f"{server.url}/v1/uploads/", headers=create) as r:
        if r.status != 201:
            raise RuntimeError(f"create answered {r.status}: {await r.text()}")
        url = str(r.url.join(URL(r.headers["Location"])))
    common = _checksum(chunk)
    offset = 0
    for index in range(upload.rest + 1):
        body, checksum = (upload.first, upload.first_checksum) if index == 0 else (chunk, common)
        patch = {
            **headers,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
            "Upload-Checksum": checksum,
        }
        async with session.patch(url, data=body, headers=patch) as r:
            if r.status != 204:
                raise RuntimeError(f"PATCH answered {r.status}: {await r.text()}")
        offset += len(body)


async def _load(server: RunningServer, chunk: bytes, uploads: list[_Upload]) -> float:
    """Run the uploads concurrently; return MB/s (10^6 bytes)."""
    connector = aiohttp.TCPConnector(limit=len(uploads))
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(_upload(session, server, upload, chunk) for upload in uploads))
        elapsed = time.perf_counter() - started
    return sum(u.length for u in uploads) / elapsed / 1e6


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


_Starter = Callable[[Path], RunningServer]


def _run_against(
    start: _Starter, chunk: bytes, uploads: list[_Upload]
) -> tuple[float, int, int, float]:
    """(MB/s, baseline RSS, peak RSS, server CPU s per GB) of one load on a fresh server."""
    with tempfile.TemporaryDirectory(prefix="bench-tus-") as tmp:
        server = start(Path(tmp) / "data")
        try:
            process = psutil.Process(server.process.pid)
            cpu_before = sum(process.cpu_times()[:2])
            with _PeakRss(server.process.pid) as rss:
                rate = asyncio.run(_load(server, chunk, uploads))
            cpu = sum(process.cpu_times()[:2]) - cpu_before
            gigabytes = sum(u.length for u in uploads) / 1e9
            return rate, rss.baseline, rss.peak, cpu / gigabytes
        finally:
            _stop(server.process)


def _interleaved(
    starters: dict[str, _Starter], chunk: bytes, uploads: list[_Upload], repeats: int
) -> dict[str, tuple[float, float]]:
    """Median (MB/s, server CPU s/GB) per server over ``repeats`` rounds, the order
    reversed every other round.

    The machine is shared, so a single run of each server in a fixed order
    mostly measures what else ran at the time; interleaving gives both the
    same conditions.
    """
    rates: dict[str, list[float]] = {name: [] for name in starters}
    cpu: dict[str, list[float]] = {name: [] for name in starters}
    names = list(starters)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            rate, _, _, cpu_per_gb = _run_against(starters[name], chunk, uploads)
            rates[name].append(rate)
            cpu[name].append(cpu_per_gb)
            print(f"  tus {name}: {rate:.1f} MB/s, {cpu_per_gb:.2f} CPU s/GB", file=sys.stderr)
    return {name: (statistics.median(rates[name]), statistics.median(cpu[name])) for name in names}


def measure_tus_throughput(quick: bool) -> list[Row]:
    rows = []
    per_upload = (16 if quick else 64) * MiB
    repeats = 2 if quick else 3
    starters: dict[str, _Starter] = {
        "ours": start_deployed_server,
        "node": start_node_server,
        "node_fsync": partial(start_node_server, fsync=True),
    }
    command = command_for(NAME, quick)
    for chunk_mib in (1, 8):
        chunk = os.urandom(chunk_mib * MiB)
        uploads = _uploads(chunk, per_upload // len(chunk), CONCURRENCY)
        measured = _interleaved(starters, chunk, uploads, repeats)
        (ours, ours_cpu), (node, node_cpu) = measured["ours"], measured["node"]
        node_fsync = measured["node_fsync"][0]
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
                command=command,
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
                command=command,
                anchor=f"{_ANCHOR}, fsync per PATCH",
                anchor_value=round(node_fsync, 4),
            )
        )
        rows.append(
            row(
                f"tus server CPU per GB received, {chunk_mib} MiB chunks",
                ours_cpu,
                "CPU s/GB",
                goal="info: the server process's user+system CPU (median), ours vs node",
                command=command,
                anchor=_ANCHOR,
                anchor_value=round(node_cpu, 4),
            )
        )
    return rows


def measure_tus_memory(quick: bool) -> list[Row]:
    chunk = os.urandom(8 * MiB)
    count = (256 if quick else 2048) * MiB // len(chunk)
    uploads = _uploads(chunk, count, 1)
    ours = _run_against(start_deployed_server, chunk, uploads)
    node = _run_against(start_node_server, chunk, uploads)
    _, baseline, peak, _ = ours
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
