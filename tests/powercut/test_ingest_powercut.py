"""Power cuts under the ingest service: acknowledged batches and upload bytes survive.

The real ``yardlink ingest serve`` runs in a child with its data directory
(credentials, SQLite catalog, Parquet lake, tus store, blobs) on the power-cut
filesystem. Each round, threads PUT new batches and PATCH a tus upload; the
test SIGKILLs the server at a random moment, cuts the power, mounts again and
starts a new server without help. Then: the device's token still works, every
batch answered 200/201 is in the lake whole (a retry is a duplicate), every
``*.parquet`` file is readable, each batch is in the lake once, and every tus
upload keeps at least its acknowledged offset and completes to the right bytes.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sync.protocol import Stream, make_batch_id
from sync.protocol.parquet import encode_batch
from tests.support.ingest import event_records
from tests.support.ingest_process import IngestProcess
from tests.support.powercut.ingest_client import provision, put_batch, tus, tus_create
from tests.support.powercut.mount import PowercutDisk, cut_lost

FAST_CUTS = 2
SLOW_CUTS = 100
BATCHES_PER_ROUND, RECORDS = 6, 200
UPLOAD_BYTES, CHUNK = 256 << 10, 32 << 10


@dataclass
class _Round:
    batches: list[tuple[str, bytes]]
    payload: bytes
    acked_batches: set[str] = field(default_factory=set)
    location: str | None = None
    acked_offset: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _make_round(round_no: int, rng: random.Random) -> _Round:
    batches = []
    for index in range(BATCHES_PER_ROUND):
        first = (round_no * BATCHES_PER_ROUND + index) * RECORDS + 1
        records = event_records("gate-01", "yard-a", range(first, first + RECORDS))
        batch_id = make_batch_id("gate-01", Stream.EVENTS, first, first + RECORDS - 1)
        batches.append((batch_id, encode_batch(Stream.EVENTS, records)))
    return _Round(batches, rng.randbytes(UPLOAD_BYTES))


def _send_batches(url: str, token: str, work: _Round, mine: list[tuple[str, bytes]]) -> None:
    for batch_id, body in mine:
        try:
            status = put_batch(url, token, batch_id, body)
        except OSError:
            return  # the server died under us
        if status in (200, 201):
            with work.lock:
                work.acked_batches.add(batch_id)


def _upload(url: str, token: str, work: _Round) -> None:
    try:
        location = tus_create(url, token, work.payload)
        work.location = location
        offset = 0
        while offset < len(work.payload):
            status, headers = tus(
                url, token, "PATCH", location, work.payload[offset : offset + CHUNK], offset
            )
            if status != 204:
                return
            offset = work.acked_offset = int(headers["upload-offset"])
    except OSError:
        return


def _run_and_kill(data: Path, token: str, work: _Round, rng: random.Random) -> None:
    with IngestProcess(data) as server:
        threads = [
            threading.Thread(
                target=_send_batches, args=(server.url, token, work, work.batches[i::2])
            )
            for i in range(2)
        ]
        threads.append(threading.Thread(target=_upload, args=(server.url, token, work)))
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.05, 1.0))
        server.kill()
        for thread in threads:
            thread.join(30)


def _check(data: Path, token: str, work: _Round, sent_so_far: int) -> None:
    lake = data / "lake"
    with IngestProcess(data) as server:
        for batch_id in work.acked_batches:
            files = list(lake.rglob(f"{batch_id}.parquet"))
            assert len(files) == 1, f"acknowledged batch {batch_id} lost"
        for path in lake.rglob("*.parquet"):  # nothing half-written visible
            assert pq.read_metadata(path).num_rows == RECORDS, path
        for batch_id, body in work.batches:
            status = put_batch(server.url, token, batch_id, body)
            assert status in (200, 201), (batch_id, status)
            if batch_id in work.acked_batches:
                assert status == 200, f"acknowledged {batch_id} was not known as stored"
        assert len(list(lake.rglob("*.parquet"))) == sent_so_far, "a batch stored twice or lost"
        if work.location is not None:
            status, headers = tus(server.url, token, "HEAD", work.location)
            assert status == 200, "an acknowledged upload was forgotten"
            offset = int(headers["upload-offset"])
            assert offset >= work.acked_offset, "acknowledged upload bytes lost"
            while offset < len(work.payload):
                chunk = work.payload[offset : offset + CHUNK]
                status, headers = tus(server.url, token, "PATCH", work.location, chunk, offset)
                assert status == 204, status
                offset = int(headers["upload-offset"])
            digest = hashlib.sha256(work.payload).hexdigest()
            assert (data / "blobs" / digest[:2] / digest).read_bytes() == work.payload


async def _cut_rounds(disk: PowercutDisk, cuts: int, seed: int) -> int:
    rng = random.Random(seed)
    data = disk.mountpoint / "data"
    token = provision(data)
    acked = lost = 0
    for round_no in range(cuts):
        work = _make_round(round_no, rng)
        _run_and_kill(data, token, work, rng)
        acked += len(work.acked_batches)
        lost += cut_lost(disk.cut())
        disk.mount()
        _check(data, token, work, (round_no + 1) * BATCHES_PER_ROUND)
    assert lost > 0, "no cut lost anything: the test would prove nothing"
    return acked


async def test_ingest_keeps_acknowledged_batches_and_uploads_across_power_cuts(
    disk: PowercutDisk,
) -> None:
    await _cut_rounds(disk, FAST_CUTS, seed=13)


@pytest.mark.slow
@pytest.mark.timeout(3600)
async def test_ingest_power_cut_campaign(disk: PowercutDisk) -> None:
    acked = await _cut_rounds(disk, SLOW_CUTS, seed=2304)
    print(f"ingest: {SLOW_CUTS} cuts survived, {acked} acknowledged batches kept")
