"""SIGKILL while appends carry receipts: after any kill, an append's records and its
receipt are both stored or neither, and a promised append (or drop) is kept.

A child runs concurrent producers (group commit mixes appends with and without a
receipt), prints each append once ``append_many`` returned and each drop once
``drop_receipt`` returned; the parent kills it at a random moment, reopens the outbox
and checks every receipt against the records, and every promise against the disk.
The database is kept across rounds.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from sync.outbox import Outbox
from sync.protocol import Stream
from tests.sync.crash_child import kill_while_promising

ROUNDS = 8

CHILD = r"""
import asyncio, sys
from sync.outbox import Outbox
from sync.protocol import Stream
from tests.sync.crash_child import kill_while_promising
from sync.settings import Durability, OutboxSettings

async def main(path, round_no, durability):
    settings = OutboxSettings(
        min_free_disk_bytes=0, group_commit_max_records=64, durability=Durability(durability)
    )
    outbox = Outbox.open(path, settings)
    out = sys.stdout

    async def producer(p):
        i = 0
        while True:
            key = f"{round_no}/{p}/{i}"
            count = 1 + i % 4
            payloads = [f"{key}#{count}".encode()] * count
            receipt = None if i % 3 == 0 else key
            seqs = await outbox.append_many(Stream.EVENTS, payloads, receipt=receipt)
            out.write(f"A {key} {seqs[0]} {count}\n"); out.flush()
            if receipt is not None and i % 5 == 0:
                await outbox.drop_receipt(key)
                out.write(f"D {key}\n"); out.flush()
            i += 1

    await asyncio.gather(*(producer(p) for p in range(16)))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""


def _run_and_kill(path: Path, round_no: int, rng: random.Random) -> list[str]:
    durability = "sync" if round_no % 3 else "relaxed"
    args = [str(path), str(round_no), durability]
    return kill_while_promising(CHILD, args, rng, delay_s=(0.02, 0.3))


def _stored_appends(outbox: Outbox) -> tuple[dict[str, list[int]], dict[str, int]]:
    """key -> seqs of its records on disk, and key -> records its append had
    (payload ``<key>#<count>``)."""
    stored: dict[str, list[int]] = defaultdict(list)
    counts: dict[str, int] = {}
    after = 0
    while batch := outbox.read(Stream.EVENTS, after, max_records=5000):
        for record in batch:
            key, _, count = record.payload.decode().partition("#")
            stored[key].append(record.seq)
            counts[key] = int(count)
        after = batch[-1].seq
    return stored, counts


def _carries_receipt(key: str) -> tuple[bool, bool]:
    """(appended with a receipt, its receipt dropped after the append): as the child does."""
    i = int(key.rsplit("/", 1)[1])
    return i % 3 != 0, i % 3 != 0 and i % 5 == 0


async def test_sigkill_leaves_records_and_receipt_together_and_keeps_promises(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox"
    rng = random.Random(20261129)
    promised: dict[str, tuple[int, int]] = {}
    dropped: set[str] = set()
    checked_receipts = 0
    for round_no in range(ROUNDS):
        for line in _run_and_kill(path, round_no, rng):
            kind, key, *rest = line.split()
            if kind == "A":
                promised[key] = (int(rest[0]), int(rest[1]))
            else:
                dropped.add(key)
        outbox = Outbox.open(path)
        try:
            stored, counts = _stored_appends(outbox)
            receipts = {k.decode(): seq for k, seq in outbox.receipts().items()}
            for key, seqs in stored.items():
                first = seqs[0]
                assert seqs == list(range(first, first + counts[key])), f"{key}: records split"
                with_receipt, drop_follows = _carries_receipt(key)
                if with_receipt and not drop_follows:
                    assert receipts.get(key) == first, f"{key}: records stored without receipt"
            for key, first in receipts.items():
                assert key in stored and stored[key][0] == first, f"{key}: receipt alone"
                assert _carries_receipt(key)[0]
                checked_receipts += 1
            for key, (first, count) in promised.items():
                assert stored.get(key) == list(range(first, first + count)), f"{key} lost"
                if key in dropped:
                    assert key not in receipts, f"{key}: a durable drop came back"
            assert len(promised) > 50 * (round_no + 1)
        finally:
            await outbox.close()
    assert checked_receipts > 100 and dropped
