"""SIGKILL both sides: a sync engine process and a real `yardlink ingest serve` process are
killed at random moments and restarted, while the link emulator cuts and flaps.  At the
end the lake holds every event exactly once, every sampled and every requested raw blob
is in the cloud's blob store byte-exact, and the outbox is empty."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.linkemu import Direction, LinkConditions, LinkEmulator
from sync.outbox import BlobRef, Outbox
from sync.protocol import Stream
from sync.settings import OutboxSettings
from tests.sync.ingest_server import (
    DEVICE,
    BlobDir,
    CloudProcess,
    blob_file,
    event_payload,
    lake_seqs,
)


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
            "--blobs",
            str(work / "blobs"),
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


async def produce(work: Path, n: int, raw: int) -> tuple[list[int], list[BlobRef]]:
    """``n`` events; ``raw`` sampled blobs; the first two events also have a raw frame kept
    on site only (for raw requests)."""
    outbox = Outbox.open(work / "outbox", OutboxSettings(min_free_disk_bytes=0))
    blobs = BlobDir(work / "blobs")
    try:
        seqs = await outbox.append_many(Stream.EVENTS, [event_payload(i) for i in range(n)])
        refs = [blobs.add(os.urandom(200_000 + i)) for i in range(raw)]
        for ref in refs:
            await outbox.append_blob_ref(Stream.RAW_SAMPLED, ref)
        kept = [blobs.add(os.urandom(150_000 + i), seq=seqs[i]) for i in range(2)]
        return seqs, refs + kept
    finally:
        await outbox.close()


def request_raw(cloud: CloudProcess, seqs: list[int]) -> None:
    """An operator asks for the raw frames of these events (admin API over HTTP)."""
    yardlink = str(Path(sys.executable).parent / "yardlink")
    out = subprocess.run(
        [yardlink, "ingest", "operator", "add", "ops", "--data-dir", str(cloud.data_dir)]
        + ["--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    token = json.loads(out)["token"]
    for seq in seqs:
        body = json.dumps({"device_id": DEVICE, "seq": seq}).encode()
        request = urllib.request.Request(
            f"{cloud.url}/v1/raw-requests",
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 201


async def kill_restart_cycle(
    tmp_path: Path, cloud: CloudProcess, *, events: int, rounds: int, seed: int
) -> None:
    seqs, refs = await produce(tmp_path, events, raw=4)
    await asyncio.to_thread(request_raw, cloud, seqs[:2])
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
            deadline = asyncio.get_running_loop().time() + 90
            while len(lake_seqs(cloud.data_dir, Stream.EVENTS)) < len(seqs) or not all(
                blob_file(cloud.data_dir, ref.sha256).exists() for ref in refs
            ):
                assert asyncio.get_running_loop().time() < deadline, "events or blobs missing"
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)  # a duplicate would land now
        finally:
            engine.stop()
    assert engine.kills >= rounds // 5 and cloud_kills >= rounds // 5
    assert sorted(lake_seqs(cloud.data_dir, Stream.EVENTS)) == seqs  # exactly once
    for ref in refs:  # sampled and requested raw blobs, byte-exact
        stored = blob_file(cloud.data_dir, ref.sha256).read_bytes()
        assert hashlib.sha256(stored).hexdigest() == ref.sha256
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
