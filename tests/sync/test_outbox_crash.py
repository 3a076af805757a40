"""SIGKILL crash test: every acknowledged append survives, in order, exactly once.

A child process runs many concurrent producers (group commit) and prints each
seq as soon as ``append`` returns, plus the watermark of each ``ack``.  The
parent kills it with SIGKILL at a random moment, reopens the outbox and checks
the printed promises against what is on disk.  The database is kept across
rounds, so recovery of recovered databases is exercised too.  A second test kills
the child only once RocksDB writes into recycled WAL files (larger records, small
memtables), so recovery has to stop at the stale records a reused file still holds.
"""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

from tests.support.outbox_promises import OutboxPromises
from tests.sync.crash_child import kill_while_promising

ROUNDS = 20
RECYCLED_ROUNDS = 8
REUSED_WAL = b"reusing log"  # RocksDB's LOG line when a WAL file is recycled

CHILD = r"""
import asyncio, sys
from sync.outbox import Outbox
from sync.protocol import Stream
from tests.sync.crash_child import kill_while_promising
from sync.settings import Durability, OutboxSettings

STREAMS = [Stream.CRITICAL, Stream.EVENTS, Stream.TELEMETRY]

async def main(path, round_no, durability, pad, budget):
    settings = OutboxSettings(
        min_free_disk_bytes=0,
        group_commit_max_records=64,
        durability=Durability(durability),
        memory_budget_bytes=budget,
    )
    padding = b"|" + b"p" * pad if pad else b""
    outbox = Outbox.open(path, settings)
    out = sys.stdout
    out.write("open\n"); out.flush()

    async def producer(p):
        i = 0
        while True:
            stream = STREAMS[(p + i) % 3]
            payload = f"{round_no}:{p}:{i}"
            if i % 7 == 0:
                pair = [f"{payload}:0", f"{payload}:1"]
                seqs = await outbox.append_many(stream, [p.encode() + padding for p in pair])
                for seq, text in zip(seqs, pair):
                    out.write(f"A {stream.value} {seq} {text}\n")
            else:
                seq = await outbox.append(stream, payload.encode() + padding)
                out.write(f"A {stream.value} {seq} {payload}\n")
            out.flush()
            i += 1

    async def acker():
        while True:
            await asyncio.sleep(0.005)
            records = outbox.read(Stream.TELEMETRY, max_records=40)
            if records:
                await outbox.ack(Stream.TELEMETRY, records[-1].seq)
                out.write(f"K telemetry {records[-1].seq}\n"); out.flush()

    await asyncio.gather(*(producer(p) for p in range(24)), acker())

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
"""


def _run_and_kill(
    path: Path, round_no: int, rng: random.Random, *, pad: int = 0, budget: int = 64 << 20
) -> list[str]:
    """Run the child, kill it (once it writes into a recycled WAL when ``pad``)."""
    # relaxed mode too: kill -9 loses no page cache, so it must keep its promises as well
    durability = "sync" if round_no % 4 else "relaxed"
    args = [str(path), str(round_no), durability, str(pad), str(budget)]
    return kill_while_promising(
        CHILD,
        args,
        rng,
        delay_s=(0.01, 0.3),
        not_promises=frozenset({"open\n"}),
        before_kill=(lambda child: _wait_for_recycled_wal(path, child)) if pad else None,
    )


def _wait_for_recycled_wal(path: Path, child: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while REUSED_WAL not in (path / "LOG").read_bytes():
        assert child.poll() is None, "the child died before a WAL file was recycled"
        assert time.monotonic() < deadline, "no WAL file was recycled within 60 s"
        time.sleep(0.02)


async def _crash_rounds(path: Path, rounds: int, *, pad: int = 0, budget: int = 64 << 20) -> int:
    """Kill and check ``rounds`` times; returns how many appends were promised."""
    rng = random.Random(20261126)
    promises = OutboxPromises()
    for round_no in range(rounds):
        lines = _run_and_kill(path, round_no, rng, pad=pad, budget=budget)
        appended = promises.take(lines)
        assert appended, f"round {round_no}: no append was acknowledged before the kill"
        await promises.check(path)
    return promises.appends


async def test_sigkill_never_loses_an_acknowledged_record(tmp_path: Path) -> None:
    assert await _crash_rounds(tmp_path / "outbox", ROUNDS) > ROUNDS * 50


async def test_sigkill_while_writing_into_recycled_wal_files(tmp_path: Path) -> None:
    # 8 MB budget: 1 MB memtables and an 8 MB WAL budget, so WAL files become
    # obsolete (and are reused) after a few MB of 2 KB records
    promised = await _crash_rounds(tmp_path / "outbox", RECYCLED_ROUNDS, pad=2000, budget=8 << 20)
    assert promised > RECYCLED_ROUNDS * 1000
