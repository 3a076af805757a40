"""Power cuts under the encrypted blob store: every stored blob and its day key survive.

A child stores blobs (``BlobStore.put``, over several UTC days so new day
directories and day keys are made) on the power-cut filesystem and prints each
one once ``put`` returned. The test SIGKILLs it at a random moment, cuts the
power, mounts again and opens the store: every promised blob decrypts to its
bytes, and no ``.blob`` file present is half-written (each one authenticates).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from appliance.privacy.blobstore import BlobStore
from tests.support.powercut.mount import PowercutDisk, cut_lost
from tests.sync.crash_child import kill_while_promising

FAST_CUTS = 3
SLOW_CUTS = 100
MORE_ROUNDS = 20
DAY_S = 86400

CHILD = r"""
import random, sys
from pathlib import Path
from appliance.privacy.blobstore import BlobStore

root, round_no = Path(sys.argv[1]), int(sys.argv[2])
store = BlobStore(root / "blobs", root / "blob-keys")
start = 1_800_000_000 + round_no * 86400  # a new UTC day every round, two in each
i = 0
while True:
    data = random.Random(f"{round_no}:{i}").randbytes(1000 + (i * 3001) % 20000)
    blob = store.put(data, when=start + (i % 2) * 86400)
    print(f"P {round_no} {i} {blob.day} {blob.sha256}", flush=True)
    i += 1
"""


def _blob_bytes(round_no: int, i: int) -> bytes:
    return random.Random(f"{round_no}:{i}").randbytes(1000 + (i * 3001) % 20000)


def _check(root: Path, promised: dict[str, tuple[str, bytes]]) -> None:
    store = BlobStore(root / "blobs", root / "blob-keys")
    for sha256, (day, data) in promised.items():
        assert store.get(sha256, day) == data, f"lost stored blob {sha256[:12]} of {day}"
    for path in (root / "blobs").rglob("*.blob"):  # raises BlobCorrupt on a torn one
        store.get(path.stem, path.parent.name)


async def _cut_rounds(disk: PowercutDisk, cuts: int, seed: int) -> int:
    rng = random.Random(seed)
    root = disk.mountpoint
    promised: dict[str, tuple[str, bytes]] = {}
    lost = round_no = 0
    # A kill between a write and its fsync is a narrow window for a store this small:
    # go on past ``cuts`` rounds (at most MORE_ROUNDS) until one cut has lost something.
    while round_no < cuts or (lost == 0 and round_no < cuts + MORE_ROUNDS):
        lines = kill_while_promising(CHILD, [str(root), str(round_no)], rng, delay_s=(0.0, 0.5))
        for line in lines:
            _, r, i, day, sha256 = line.split()
            promised[sha256] = (day, _blob_bytes(int(r), int(i)))
        lost += cut_lost(disk.cut())
        disk.mount()
        _check(root, promised)
        round_no += 1
    assert lost > 0, "no cut lost anything: the test would prove nothing"
    return len(promised)


async def test_blob_store_keeps_stored_blobs_across_power_cuts(disk: PowercutDisk) -> None:
    assert await _cut_rounds(disk, FAST_CUTS, seed=11) > 0


@pytest.mark.slow
@pytest.mark.timeout(3600)
async def test_blob_store_power_cut_campaign(disk: PowercutDisk) -> None:
    blobs = await _cut_rounds(disk, SLOW_CUTS, seed=2303)
    print(f"blob store: {SLOW_CUTS} cuts survived, {blobs} stored blobs kept")
