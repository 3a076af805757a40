"""Power cuts under the RocksDB outbox: every append acknowledged in sync mode survives.

A child appends (sync durability, group commit) to an outbox on the power-cut
filesystem and prints each seq once ``append`` returned, and each telemetry
ack. The test SIGKILLs it at a random moment, cuts the power (everything not
fsynced is lost or torn), mounts again and opens the outbox as the appliance
would: nothing quarantined, every promise there exactly once, no acked record
back, no seq reused. The database lives on across rounds, so recovery after
recovery is cut too.
"""

from __future__ import annotations

import random

import pytest

from tests.support.outbox_promises import OutboxPromises
from tests.support.powercut.mount import PowercutDisk, cut_lost
from tests.sync.crash_child import kill_while_promising

FAST_CUTS = 3
SLOW_CUTS = 100

CHILD = r"""
import asyncio, sys
from sync.outbox import Outbox
from sync.protocol import Stream
from sync.settings import Durability, OutboxSettings

STREAMS = [Stream.CRITICAL, Stream.EVENTS, Stream.TELEMETRY]

async def main(path, round_no):
    settings = OutboxSettings(
        min_free_disk_bytes=0, group_commit_max_records=32, durability=Durability.SYNC,
        memory_budget_bytes=8 << 20,
    )
    outbox = Outbox.open(path, settings)
    out = sys.stdout
    out.write("open\n"); out.flush()

    async def producer(p):
        i = 0
        while True:
            stream = STREAMS[(p + i) % 3]
            payload = f"{round_no}:{p}:{i}"
            seq = await outbox.append(stream, payload.encode() + b"|" + b"x" * 300)
            out.write(f"A {stream.value} {seq} {payload}\n"); out.flush()
            i += 1

    async def acker():
        while True:
            await asyncio.sleep(0.02)
            records = outbox.read(Stream.TELEMETRY, max_records=20)
            if records:
                await outbox.ack(Stream.TELEMETRY, records[-1].seq)
                out.write(f"K telemetry {records[-1].seq}\n"); out.flush()

    await asyncio.gather(*(producer(p) for p in range(8)), acker())

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def _cut_rounds(disk: PowercutDisk, cuts: int, seed: int) -> int:
    rng = random.Random(seed)
    promises = OutboxPromises()
    path = disk.mountpoint / "outbox"
    acknowledged = 0
    lost = 0
    for round_no in range(cuts):
        lines = kill_while_promising(
            CHILD,
            [str(path), str(round_no)],
            rng,
            delay_s=(0.0, 0.6),
            not_promises=frozenset({"open\n"}),
        )
        acknowledged += promises.take(lines)
        lost += cut_lost(disk.cut())
        disk.mount()
        await promises.check(path)
    assert lost > 0, "no cut lost anything: the test would prove nothing"
    return acknowledged


async def test_outbox_keeps_acknowledged_appends_across_power_cuts(disk: PowercutDisk) -> None:
    assert await _cut_rounds(disk, FAST_CUTS, seed=23) > 0


@pytest.mark.slow
@pytest.mark.timeout(3600)
async def test_outbox_power_cut_campaign(disk: PowercutDisk) -> None:
    acknowledged = await _cut_rounds(disk, SLOW_CUTS, seed=2301)
    print(f"outbox: {SLOW_CUTS} cuts survived, {acknowledged} acknowledged appends kept")
