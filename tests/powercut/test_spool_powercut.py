"""Power cuts under the appliance reading its spool: every frame stored exactly once.

Each round the test drops new frames into the spool on the power-cut filesystem,
durably (file and directory fsynced: what a camera was told is kept), starts a
real daemon in a child process (stand-in tasks, no model) with its outbox, day
keys and blob store on the same filesystem, SIGKILLs it at a random moment and
cuts the power. A fresh daemon then starts on what is left, without help, and
reads the spool until it is empty and no receipt is left: each frame's events
are in the outbox exactly once per task, and the spool holds no file twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from appliance.config import SiteConfig
from appliance.sources.synthetic import SyntheticYardCamera
from tests.appliance.daemon_harness import REPO, read_events, wait_for
from tests.appliance.spool_harness import QuickTask, fetch_status, running, spool_config
from tests.support.powercut.mount import PowercutDisk, cut_lost

TASKS = ("gate_ocr", "face_anonymize")
FRAMES_PER_ROUND = 4
FAST_CUTS = 2
SLOW_CUTS = 100

CHILD = r"""
import asyncio, sys
from pathlib import Path
from appliance.daemon import Daemon
from tests.appliance.spool_harness import QuickTask, fixed_tasks, spool_config

root = Path(sys.argv[1])

async def main():
    tasks = [QuickTask(name) for name in sys.argv[2:]]
    config = spool_config(root, root / "spool", retry_s=None)
    daemon = Daemon(config, task_loader=fixed_tasks(*tasks))
    await daemon.start()
    print("started", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def _config(root: Path) -> SiteConfig:
    return spool_config(root, root / "spool", retry_s=None)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_durably(root: Path, name: str, frame: bytes) -> None:
    """What a camera's durable upload does: the file and its entry fsynced."""
    camera_dir = root / "spool" / "gate-in"
    if not camera_dir.exists():
        camera_dir.mkdir(parents=True)
        _fsync_dir(root / "spool")
        _fsync_dir(root)
    with (camera_dir / name).open("wb") as f:
        f.write(frame)
        os.fsync(f.fileno())
    _fsync_dir(camera_dir)


def _kill_after(root: Path, rng: random.Random) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), *TASKS],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    try:
        line = child.stdout.readline()
        assert line == "started\n", child.stderr.read()[-3000:]
        time.sleep(rng.uniform(0.0, 1.0))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
        child.stderr.close()


async def _settle(root: Path) -> None:
    """A fresh daemon reads the spool until it is empty and no receipt is left."""
    tasks = [QuickTask(name) for name in TASKS]
    async with running(_config(root), *tasks) as daemon:
        outbox = daemon.outbox
        assert outbox is not None
        try:
            await wait_for(lambda: not list((root / "spool" / "gate-in").iterdir()))
            await wait_for(lambda: outbox.receipts() == {})
        except TimeoutError:
            status = await fetch_status(daemon)
            left = sorted(p.name for p in (root / "spool").rglob("*"))
            raise AssertionError(
                f"the spool did not settle: {left}, receipts {outbox.receipts()}, "
                f"spool {status.get('spool')}, supervised {status.get('supervised')}"
            ) from None


async def _cut_rounds(disk: PowercutDisk, cuts: int, seed: int) -> int:
    rng = random.Random(seed)
    camera = SyntheticYardCamera(seed)
    root = disk.mountpoint
    dropped: list[str] = []
    lost = 0
    for round_no in range(cuts):
        for i in range(FRAMES_PER_ROUND):
            frame = camera.frame(round_no * FRAMES_PER_ROUND + i).encode()
            _drop_durably(root, f"frame-{round_no:04d}-{i}.jpg", frame)
            dropped.append(hashlib.sha256(frame).hexdigest())
        await asyncio.to_thread(_kill_after, root, rng)
        lost += cut_lost(disk.cut())
        disk.mount()
        await _settle(root)
        stored = Counter(
            (e["task"], e["raw_sha256"]) for e in await read_events(_config(root).outbox.path)
        )
        expected = Counter((task, sha) for sha in dropped for task in TASKS)
        assert stored == expected, f"round {round_no}: frames lost or stored twice"
        processed = sorted(p.name for p in (root / "spool" / "processed" / "gate-in").iterdir())
        assert len(processed) == len(dropped) == len(set(processed))
    assert lost > 0, "no cut lost anything: the test would prove nothing"
    return len(dropped)


async def test_spool_stores_each_frame_once_across_power_cuts(disk: PowercutDisk) -> None:
    assert await _cut_rounds(disk, FAST_CUTS, seed=5) == FAST_CUTS * FRAMES_PER_ROUND


@pytest.mark.slow
@pytest.mark.timeout(3600)
async def test_spool_power_cut_campaign(disk: PowercutDisk) -> None:
    frames = await _cut_rounds(disk, SLOW_CUTS, seed=2302)
    print(f"spool: {SLOW_CUTS} cuts survived, {frames} frames each stored once")
