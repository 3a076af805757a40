"""SIGKILL both sides: a sync engine process and a real `yardlink ingest serve` process are
killed at random moments and restarted, while the link emulator cuts and flaps.  At the
end the lake holds every event exactly once and the outbox is empty."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.linkemu import Direction, LinkConditions, LinkEmulator
from sync.outbox import Outbox, OutboxClass
from sync.protocol import Stream
from sync.settings import OutboxSettings
from tests.sync.ingest_server import CloudProcess, event_payload, lake_seqs


class EngineProcess:
    def __init__(self, work: Path, url: str, token: str) -> None:
        self.args = [
            sys.executable,
            "-m",
            "tests.sync.engine_process",
            "--outbox",
            str(work / "outbox"),
            "--state",
            str(work / "sync-state.json"),
            "--url",
            url,
            "--token",
            token,
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline().strip()
        self.proc.stdout.close()
        assert ready == b"ready"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
            self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[CloudProcess]:
    process = CloudProcess(tmp_path / "cloud")
    yield process
    process.close()


async def produce(work: Path, n: int) -> list[int]:
    outbox = Outbox.open(work / "outbox", OutboxSettings(min_free_disk_bytes=0))
    try:
        return await outbox.append_many(OutboxClass.EVENTS, [event_payload(i) for i in range(n)])
    finally:
        await outbox.close()


async def kill_restart_cycle(
    tmp_path: Path, cloud: CloudProcess, *, events: int, rounds: int, seed: int
) -> None:
    seqs = await produce(tmp_path, events)
    rng = random.Random(seed)
    emu = LinkEmulator(("127.0.0.1", cloud.port), LinkConditions(rtt_s=0.005, rate_bps=20e6))
    async with emu:
        engine = EngineProcess(tmp_path, emu.url, cloud.token)
        await asyncio.to_thread(engine.start)
        cloud_kills = 0
        try:
            actions = ["engine", "cloud", "cut-up", "cut-down", "flap"] * (rounds // 5)
            rng.shuffle(actions)  # every kind of fault, several times, in random order
            for action in actions:
                await asyncio.sleep(rng.uniform(0.05, 0.6))
                if action == "engine":
                    engine.kill()
                    await asyncio.to_thread(engine.start)
                elif action == "cloud":
                    cloud_kills += 1
                    cloud.kill()
                    await asyncio.to_thread(cloud.start)
                elif action == "cut-up":
                    emu.cut_after(rng.randint(200, 30_000), Direction.UP)
                elif action == "cut-down":
                    emu.cut_after(1, Direction.DOWN)
                else:
                    emu.set_online(False)
                    await asyncio.sleep(rng.uniform(0.05, 0.3))
                    emu.set_online(True)
            deadline = asyncio.get_running_loop().time() + 60
            while len(lake_seqs(cloud.data_dir, Stream.EVENTS)) < len(seqs):
                assert asyncio.get_running_loop().time() < deadline, "events missing"
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)  # a duplicate would land now
        finally:
            engine.stop()
    assert engine.kills >= rounds // 5 and cloud_kills >= rounds // 5
    assert sorted(lake_seqs(cloud.data_dir, Stream.EVENTS)) == seqs  # exactly once
    outbox = Outbox.open(tmp_path / "outbox", OutboxSettings(min_free_disk_bytes=0))
    try:
        assert outbox.stats().per_class[Stream.EVENTS].records == 0
    finally:
        await outbox.close()


async def test_sigkill_engine_and_cloud_exactly_once(tmp_path: Path, cloud: CloudProcess) -> None:
    await kill_restart_cycle(tmp_path, cloud, events=3000, rounds=15, seed=1)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [2, 3, 4])
async def test_sigkill_soak(tmp_path: Path, cloud: CloudProcess, seed: int) -> None:
    await kill_restart_cycle(tmp_path, cloud, events=30_000, rounds=60, seed=seed)
