"""Outbox benchmark (issue 2, section 4): 200-byte records, anchors measured in the same run.

Measured warm, as on an appliance that has run for a while: every database first takes
``WARM`` records untimed (the outbox's are acknowledged again before its drain). RocksDB
only recycles WAL files once one became obsolete (after the first forced flush, at
``max_total_wal_size``), and the outbox relies on recycled WALs for cheap fsyncs.

Async contenders (the outbox, aiosqlite) run on uvloop, the appliance daemon's event
loop; ``append_many`` is also measured on the stdlib asyncio loop (an info row).

* ``append_many`` in batches of 256, ``sync`` durability, vs a bare rocksdict loop
  doing the same synced WriteBatches with the outbox's RocksDB options (the physical
  limit) and vs a SQLite WAL queue
  (``synchronous=FULL``, transactions of 256: what a user would pick instead), both
  called directly (sqlite3, no thread hop) and from asyncio (aiosqlite);
* 1,000 concurrent producers each awaiting a durable single append (group commit);
* read + acknowledge drain, vs a bare rocksdict iterate + synced range delete;
* how late the event loop runs other work (p99 of a 0.5 ms ticker) while one caller
  appends, against the same ticker on an idle loop (informational);
* peak RSS of a process holding a large backlog (10 million records; --quick: 300,000).

Run: ``python -m bench.outbox [--quick]``; writes bench/results/outbox.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from bench._common import Row, command_for, parse_args, row, write_results
from bench.outbox_anchors import (
    BATCH,
    aiosqlite_queue_append,
    bare_rocksdict,
    sqlite_queue_append,
    warm_payloads,
)

NAME = "outbox"
RECORD = 200
PRODUCERS = 1000
REPEATS = 5


def _payloads(count: int) -> list[bytes]:
    pool = [os.urandom(RECORD) for _ in range(1024)]
    return [pool[i % len(pool)] for i in range(count)]


async def outbox_append_many(path: Path, payloads: list[bytes]) -> float:
    """Records/s of ``append_many`` in batches of 256, one awaiting caller, sync durability."""
    from sync.outbox import Outbox
    from sync.protocol import Stream
    from sync.settings import OutboxSettings

    outbox = Outbox.open(path, OutboxSettings())
    try:
        await _warm_outbox(outbox, payloads)
        start = time.perf_counter()
        for first in range(0, len(payloads), BATCH):
            await outbox.append_many(Stream.EVENTS, payloads[first : first + BATCH])
        return len(payloads) / (time.perf_counter() - start)
    finally:
        await outbox.close()


TICK_S = 0.0005


async def _tick_lags(stop: asyncio.Event) -> list[float]:
    """How late each 0.5 ms sleep on the event loop wakes, until ``stop`` is set."""
    lags: list[float] = []
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(TICK_S)
        lags.append(time.perf_counter() - start - TICK_S)
    return lags


def _p99_ms(lags: list[float]) -> float:
    ordered = sorted(lags)
    return ordered[int(len(ordered) * 0.99)] * 1e3


async def loop_lag_during_appends(path: Path, payloads: list[bytes]) -> tuple[float, float]:
    """p99 lateness (ms) of a 0.5 ms ticker on the event loop: idle for 0.5 s (the
    anchor), then while one caller runs ``append_many`` x256 with sync durability.
    What other tasks of the appliance (intake, sync) wait while the outbox commits."""
    from sync.outbox import Outbox
    from sync.protocol import Stream
    from sync.settings import OutboxSettings

    outbox = Outbox.open(path, OutboxSettings())
    try:
        await _warm_outbox(outbox, payloads)
        stop = asyncio.Event()
        ticker = asyncio.create_task(_tick_lags(stop))
        await asyncio.sleep(0.5)
        stop.set()
        idle = await ticker
        stop = asyncio.Event()
        ticker = asyncio.create_task(_tick_lags(stop))
        for first in range(0, len(payloads), BATCH):
            await outbox.append_many(Stream.EVENTS, payloads[first : first + BATCH])
        stop.set()
        busy = await ticker
    finally:
        await outbox.close()
    return _p99_ms(idle), _p99_ms(busy)


async def _warm_outbox(outbox: Any, payloads: list[bytes]) -> int:
    """Append ``WARM`` records untimed; returns the last seq."""
    from sync.protocol import Stream

    warm = warm_payloads(payloads)
    last = 0
    for first in range(0, len(warm), BATCH):
        last = (await outbox.append_many(Stream.EVENTS, warm[first : first + BATCH]))[-1]
    return last


async def outbox_concurrent_and_drain(
    path: Path, payloads: list[bytes], chunk: int
) -> tuple[float, float]:
    """Records/s of 1,000 concurrent single appends, then of a read + ack drain."""
    from sync.outbox import Outbox
    from sync.protocol import Stream
    from sync.settings import OutboxSettings

    outbox = Outbox.open(path, OutboxSettings())
    try:
        # warm, then acknowledged: the drain below reads only the timed records
        await outbox.ack(Stream.EVENTS, await _warm_outbox(outbox, payloads))
        per_producer = max(1, len(payloads) // PRODUCERS)

        async def producer(index: int) -> None:
            for i in range(per_producer):
                await outbox.append(Stream.EVENTS, payloads[(index + i) % len(payloads)])

        start = time.perf_counter()
        await asyncio.gather(*(producer(i) for i in range(PRODUCERS)))
        total = per_producer * PRODUCERS
        concurrent_rate = total / (time.perf_counter() - start)

        drained = 0
        start = time.perf_counter()
        after = 0
        while records := outbox.read(Stream.EVENTS, after, max_records=chunk):
            after = records[-1].seq
            drained += await outbox.ack(Stream.EVENTS, after)
        drain_rate = drained / (time.perf_counter() - start)
        assert drained == total, (drained, total)
    finally:
        await outbox.close()
    return concurrent_rate, drain_rate


RSS_CHILD = r"""
import asyncio, json, os, resource, sys, time
from sync.outbox import Outbox
from sync.protocol import Stream
from sync.settings import OutboxSettings

def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0

async def main(path, total):
    baseline = rss_mb()
    settings = OutboxSettings()
    outbox = Outbox.open(path, settings)
    pool = [os.urandom(200) for _ in range(4096)]
    start = time.perf_counter()
    for first in range(0, total, 4096):
        await outbox.append_many(Stream.EVENTS, pool[: min(4096, total - first)])
    fill = time.perf_counter() - start
    await outbox.close()
    outbox = Outbox.open(path, settings)  # recovery with the whole backlog on disk
    stats = outbox.stats()
    after = 0
    for _ in range(100):
        records = outbox.read(Stream.EVENTS, after, max_records=1000)
        after = records[-1].seq
        await outbox.ack(Stream.EVENTS, after)
    await outbox.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"baseline_mb": baseline, "peak_mb": peak, "fill_s": fill,
                      "records": stats.per_class[Stream.EVENTS].records,
                      "disk_bytes": stats.disk_bytes}))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def backlog_peak_rss(path: Path, total: int) -> dict[str, float]:
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, str(path), str(total)],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def outbox_rows(
    best: dict[str, float],
    lags: tuple[float, float],
    rss: dict[str, float],
    *,
    backlog: int,
    chunk: int,
    command: str,
) -> list[Row]:
    """The result rows from each contender's best rate, the loop lags (idle, busy) and
    the backlog's RSS."""
    bare, bare_drain, sqlite_rate = best["bare"], best["bare_drain"], best["sqlite"]
    aiosqlite_rate, append_many = best["aiosqlite"], best["append_many"]
    concurrent, drain = best["concurrent"], best["drain"]
    append_many_stdlib = best["append_many_stdlib"]
    lag_idle, lag_busy = lags
    sqlite_anchor = "SQLite WAL synchronous=FULL, txn of 256"

    def append_many_vs(
        suffix: str, anchor: str, anchor_value: float, factor: float, goal: str
    ) -> Row:
        return row(
            f"append_many_256_sync{suffix}",
            append_many,
            "records/s",
            anchor=anchor,
            anchor_value=anchor_value,
            goal=goal,
            met=append_many >= factor * anchor_value,
            command=command,
        )

    bare_anchor = "bare rocksdict synced WriteBatch x256 (outbox's RocksDB options)"
    rows: list[Row] = [
        row("bare_rocksdict_append_256_sync", bare, "records/s", goal="anchor", command=command),
        row("sqlite_wal_full_append_256", sqlite_rate, "records/s", goal="anchor", command=command),
        row(
            "aiosqlite_wal_full_append_256",
            aiosqlite_rate,
            "records/s",
            goal="anchor",
            command=command,
        ),
        append_many_vs("", bare_anchor, bare, 0.4, ">= 0.4x bare rocksdict"),
        append_many_vs("_vs_sqlite", sqlite_anchor, sqlite_rate, 1.5, ">= 1.5x SQLite WAL queue"),
        append_many_vs(
            "_vs_aiosqlite",
            "aiosqlite (asyncio) WAL synchronous=FULL, txn of 256",
            aiosqlite_rate,
            1.5,
            ">= 1.5x SQLite WAL queue as used from asyncio",
        ),
        row(
            "append_many_256_sync_stdlib_asyncio_vs_sqlite",
            append_many_stdlib,
            "records/s",
            anchor=sqlite_anchor,
            anchor_value=sqlite_rate,
            goal="info: the same on the stdlib asyncio loop instead of uvloop",
            command=command,
        ),
        row(
            "concurrent_1000_producers_sync",
            concurrent,
            "records/s",
            anchor=bare_anchor,
            anchor_value=bare,
            goal=">= 50,000 records/s",
            met=concurrent >= 50_000,
            command=command,
        ),
        row(
            "drain_read_ack",
            drain,
            "records/s",
            anchor=f"bare rocksdict iterate {chunk} + synced delete_range",
            anchor_value=bare_drain,
            goal=">= 200,000 records/s",
            met=drain >= 200_000,
            command=command,
        ),
        row(
            "event_loop_lag_p99_during_append_many",
            lag_busy,
            "ms",
            anchor="the same 0.5 ms ticker on an idle event loop (p99 lateness)",
            anchor_value=lag_idle,
            goal="info: short fsyncs run in place, the rest off the loop; the write holds the GIL",
            command=command,
        ),
        row(
            f"peak_rss_backlog_{backlog}",
            rss["peak_mb"],
            "MB",
            anchor="RSS of the same process after imports",
            anchor_value=rss["baseline_mb"],
            goal="< 200 MB",
            met=rss["peak_mb"] < 200 and rss["records"] >= backlog,
            command=command,
        ),
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(NAME, argv)
    command = command_for(NAME, args.quick)
    count = 50_000 if args.quick else 200_000
    backlog = 300_000 if args.quick else 10_000_000
    chunk = 1000
    payloads = _payloads(count)
    work = Path(tempfile.mkdtemp(prefix="bench-outbox-"))
    try:
        # The machine is shared: interleave the contenders and keep each one's best run.
        # Each round starts with a different contender, so that none keeps the same
        # slot in every round: in A/B runs on this VM the same code measured up to
        # ~10% apart depending on its place in the round.
        best: dict[str, float] = {}

        def keep(name: str, rate: float) -> None:
            best[name] = max(best.get(name, 0.0), rate)

        def run_bare(rep: int) -> None:
            rates = bare_rocksdict(work / f"bare{rep}", payloads, chunk)
            keep("bare", rates[0])
            keep("bare_drain", rates[1])

        def run_sqlite(rep: int) -> None:
            keep("sqlite", sqlite_queue_append(work / f"q{rep}.db", payloads))

        # Async contenders run on uvloop, the event loop of the appliance daemon
        # (appliance/cli.py); append_many also runs on the stdlib loop, for reference.
        def run_aiosqlite(rep: int) -> None:
            keep("aiosqlite", uvloop.run(aiosqlite_queue_append(work / f"aq{rep}.db", payloads)))

        def run_append_many(rep: int) -> None:
            keep("append_many", uvloop.run(outbox_append_many(work / f"outbox{rep}", payloads)))
            stdlib = asyncio.run(outbox_append_many(work / f"stdlib{rep}", payloads))
            keep("append_many_stdlib", stdlib)

        def run_concurrent(rep: int) -> None:
            rates = uvloop.run(outbox_concurrent_and_drain(work / f"c{rep}", payloads, chunk))
            keep("concurrent", rates[0])
            keep("drain", rates[1])

        contenders = [run_bare, run_sqlite, run_aiosqlite, run_append_many, run_concurrent]
        for rep in range(REPEATS):
            shift = rep % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                contender(rep)
            for leftover in work.iterdir():
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        # On the stdlib loop: uvloop's timers have 1 ms granularity and may fire early.
        lags = asyncio.run(loop_lag_during_appends(work / "lag", payloads))
        rss = backlog_peak_rss(work / "backlog", backlog)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = outbox_rows(best, lags, rss, backlog=backlog, chunk=chunk, command=command)
    write_results(NAME, rows, args.out)
    print(
        f"backlog: {rss['records']:,.0f} records, {rss['disk_bytes'] / 1e6:,.0f} MB on disk, "
        f"filled in {rss['fill_s']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
