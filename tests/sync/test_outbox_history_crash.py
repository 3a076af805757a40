"""SIGKILL during a renumbering: every record is there exactly once, and the next
handshake's ``confirm_history`` finishes it with the order kept.

A new (unconfirmed) outbox with records in three classes is copied for each round;
a child process renumbers it (``confirm_history`` with a cloud seq inside its
range) in small chunks and prints a line after each chunk is durable; the parent
kills it with SIGKILL after a random number of chunks.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from sync.outbox import Outbox
from sync.outbox.seq_floor import floor_path
from sync.protocol import Stream
from sync.settings import OutboxSettings

ROUNDS = 8
CLOUD_MAX = 5_000  # the cloud holds seqs up to here: inside the new outbox's range
STREAMS = (Stream.CRITICAL, Stream.EVENTS, Stream.TELEMETRY)
SMALL = OutboxSettings(min_free_disk_bytes=0, memory_budget_bytes=8 << 20)
REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import asyncio, sys
import sync.outbox.history as history
from sync.outbox import Outbox
from sync.settings import OutboxSettings

async def main(path, cloud_max):
    history._MOVE_CHUNK = 97
    outbox = Outbox.open(path, OutboxSettings(min_free_disk_bytes=0, memory_budget_bytes=8 << 20))
    store, real = outbox._store, outbox._store.move_records

    def move(*args):
        real(*args)
        sys.stdout.write("M\n"); sys.stdout.flush()

    store.move_records = move
    await outbox.confirm_history(cloud_max)
    sys.stdout.write("done\n"); sys.stdout.flush()
    await asyncio.sleep(60)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def _template(path: Path) -> dict[Stream, list[bytes]]:
    """A new outbox holding 9,000 records in three interleaved classes."""
    outbox = Outbox.open(path, SMALL)
    expected: dict[Stream, list[bytes]] = {s: [] for s in STREAMS}
    for i in range(300):
        for n, stream in enumerate(STREAMS):
            payloads = [b"%s-%d-%d" % (stream.value.encode(), i, j) for j in range(n + 9)]
            await outbox.append_many(stream, payloads)
            expected[stream] += payloads
    assert outbox.history_unconfirmed
    await outbox.close()
    return expected


def _copy(template: Path, dest: Path) -> None:
    shutil.copytree(template, dest)
    shutil.copy2(floor_path(template), floor_path(dest))


def _kill_after_chunks(path: Path, chunks: int, delay_s: float) -> int:
    """Run the child; SIGKILL it ``delay_s`` after ``chunks`` chunks are durable (or it
    is done): the kill lands anywhere in the chunk after."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(CLOUD_MAX)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    seen = 0
    try:
        for line in child.stdout:
            if line == "done\n":
                break
            seen += 1
            if seen >= chunks:
                break
        else:
            raise AssertionError(f"the child stopped: {child.stderr.read()}")
        time.sleep(delay_s)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    return seen


def _payloads(outbox: Outbox, stream: Stream) -> list[tuple[int, bytes]]:
    return [(r.seq, r.payload) for r in outbox.read(stream, max_records=100_000)]


async def test_sigkill_mid_renumbering_loses_nothing_and_resumes(tmp_path: Path) -> None:
    template = tmp_path / "template"
    expected = await _template(template)
    total = sum(map(len, expected.values()))
    rng = random.Random(20261128)
    cut_mid_way = 0
    for round_no in range(ROUNDS):
        path = tmp_path / f"round-{round_no}" / "outbox"
        path.parent.mkdir()
        _copy(template, path)
        chunks = _kill_after_chunks(path, rng.randint(1, total // 97), rng.uniform(0, 0.004))
        outbox = Outbox.open(path, SMALL)
        try:
            for stream in STREAMS:  # each record once, under its old seq or its new one
                held = sorted(p for _, p in _payloads(outbox, stream))
                assert held == sorted(expected[stream]), (round_no, stream)
            moved_already = sum(
                1 for s in STREAMS for seq, _ in _payloads(outbox, s) if seq > CLOUD_MAX
            )
            cut_mid_way += 0 < moved_already < total
            assert outbox.history_unconfirmed
            await outbox.confirm_history(CLOUD_MAX)  # the next handshake
            assert not outbox.history_unconfirmed
            for stream in STREAMS:
                records = _payloads(outbox, stream)
                assert [p for _, p in records] == expected[stream], (round_no, chunks)
                assert all(seq > CLOUD_MAX for seq, _ in records)
        finally:
            await outbox.close()
        await asyncio.sleep(0)
    assert cut_mid_way >= ROUNDS // 2  # most kills landed inside the renumbering
