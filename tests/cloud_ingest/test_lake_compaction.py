"""Compaction of closed lake partitions, on a directory and on S3 (a real SeaweedFS).

Batches go through the real service (so the catalog holds them); compaction
then merges each closed partition.  A reader looking after *every* write the
job makes never sees a record twice, a crash at any write is finished by the
next run, and a batch merged away is still recognised when a device resends it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from cloud_ingest.app_keys import CATALOG
from cloud_ingest.lake import Lake, write_batch
from cloud_ingest.lake_compaction import COMPACTED_PREFIX, compact_lake
from cloud_ingest.object_store import ObjectInfo, ObjectStore
from cloud_ingest.settings import IngestSettings
from cloud_ingest.storage import STORAGE
from sync.protocol import Stream
from sync.protocol.parquet import STREAM_SCHEMAS
from tests.support.ingest import PARQUET, Ingest, bearer, events_batch, running_ingest
from tests.support.seaweed import SeaweedS3

CLOSED_BEFORE = dt.date(2026, 1, 1)  # the test batches are dated 2025-11-24
PARTITION = "events/site=yard-a/date=2025-11-24"


@pytest.fixture(params=["local", "s3"])
async def service(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ingest]:
    fields: dict[str, object] = {"data_dir": tmp_path / "data", "sweep_interval_s": 3600}
    if request.param == "s3":
        seaweed: SeaweedS3 = request.getfixturevalue("seaweed")
        fields |= {
            "store": seaweed.store_url("compaction-tests", prefix=f"t{secrets.token_hex(6)}"),
            "store_access_key_id": seaweed.access_key,
            "store_secret_access_key": seaweed.secret_key,
            "store_create_bucket": True,
        }
    async with running_ingest(IngestSettings.model_validate(fields)) as running:
        yield running


async def _send(ingest: Ingest, token: str, first: int, last: int, **kw: object) -> int:
    batch_id, body = events_batch(first=first, last=last, **kw)  # type: ignore[arg-type]
    response = await ingest.client.put(
        f"/v1/batches/{batch_id}", data=body, headers=bearer(token) | PARQUET
    )
    assert response.status in (200, 201), await response.text()
    return response.status


async def _fill(ingest: Ingest) -> str:
    """Six batches of ten records of gate-01 (one partition) and one of gate-02; gate-01's token."""
    token = await ingest.device()
    for first in range(1, 60, 10):
        await _send(ingest, token, first, first + 9)
    other = await ingest.device("gate-02", "yard-b")
    await _send(ingest, other, 1, 5, device_id="gate-02", site_id="yard-b")
    return token


def _is_recorded(ingest: Ingest) -> Callable[[str], Awaitable[bool]]:
    async def is_recorded(batch_id: str) -> bool:
        return await ingest.app[CATALOG].get_batch(batch_id) is not None

    return is_recorded


def _lake_rows(lake: Lake) -> list[tuple[str, int]]:
    fs, path = lake.store.arrow_location(f"{lake.prefix}/events")
    dataset = ds.dataset(
        path,
        filesystem=fs,
        format="parquet",
        partitioning="hive",
        schema=STREAM_SCHEMAS[Stream.EVENTS],
    )
    table = dataset.to_table(columns=["device_id", "seq"])
    return sorted(zip(table["device_id"].to_pylist(), table["seq"].to_pylist(), strict=True))


def _partition_files(lake: Lake, partition: str = PARTITION) -> list[str]:
    return [lake.relative(o.key).rsplit("/", 1)[1] for o in lake.store.list(lake.key(partition))]


EXPECTED = [("gate-01", s) for s in range(1, 61)] + [("gate-02", s) for s in range(1, 6)]


async def test_a_closed_partition_becomes_one_file_with_every_record_once(
    service: Ingest,
) -> None:
    token = await _fill(service)
    lake = service.app[STORAGE].lake
    assert len(_partition_files(lake)) == 6
    report = await compact_lake(lake, _is_recorded(service), closed_before=CLOSED_BEFORE)
    assert (report.partitions, report.files_merged, report.files_written) == (1, 6, 1)
    assert report.rows == 60
    files = _partition_files(lake)
    assert len(files) == 1 and files[0].startswith(COMPACTED_PREFIX)
    assert _partition_files(lake, "events/site=yard-b/date=2025-11-24") == [
        "gate-02.events.1-5.parquet"  # one file: nothing to merge
    ]
    assert _lake_rows(lake) == EXPECTED
    assert lake.store.list("compaction") == []
    # the catalog still accounts for exactly the lake's records
    total = 0
    for first in range(1, 60, 10):
        batch = await service.app[CATALOG].get_batch(f"gate-01.events.{first}-{first + 9}")
        assert batch is not None
        total += batch.records
    assert total == 60
    # a resent batch whose file was merged away is still a duplicate (200), not stored again
    assert await _send(service, token, 21, 30) == 200
    assert _lake_rows(lake) == EXPECTED


async def test_open_partitions_and_unrecorded_files_are_left_alone(service: Ingest) -> None:
    await _fill(service)
    lake = service.app[STORAGE].lake
    # a file whose batch has no catalog row (a request in flight, or a crash before the row)
    batch_id, body = events_batch(first=100, last=104)
    table = pq.read_table(io.BytesIO(body))
    write_batch(
        lake,
        stream=Stream.EVENTS,
        site_id="yard-a",
        batch_id=batch_id,
        table=table,
        body=body,
        body_is_canonical=True,
    )
    report = await compact_lake(lake, _is_recorded(service), closed_before=dt.date(2025, 11, 24))
    assert report.partitions == 0 and len(_partition_files(lake)) == 7  # not closed yet
    report = await compact_lake(lake, _is_recorded(service), closed_before=CLOSED_BEFORE)
    assert report.unrecorded_kept == [f"{PARTITION}/{batch_id}.parquet"]
    assert sorted(_partition_files(lake))[1:] == [f"{batch_id}.parquet"]


class Interrupted(Exception):
    """The injected crash."""


class WatchedStore:
    """The real store; a check runs after every write, and write number ``crash_at`` crashes."""

    def __init__(self, inner: ObjectStore, after_write: Callable[[], None], crash_at: int) -> None:
        self.inner = inner
        self.after_write = after_write
        self.crash_at = crash_at
        self.writes = 0

    def _wrote(self) -> None:
        self.writes += 1
        self.after_write()
        if self.writes == self.crash_at:
            raise Interrupted(f"crash after write {self.writes}")

    @property
    def url(self) -> str:
        return self.inner.url

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)
        self._wrote()

    def put_file(self, key: str, source: Path) -> None:
        self.inner.put_file(key, source)
        self._wrote()

    def concat(self, key: str, parts: Iterable[str], *, sha256: str | None = None) -> int:
        size = self.inner.concat(key, parts, sha256=sha256)
        self._wrote()
        return size

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def iter_bytes(self, key: str, piece: int = 1 << 20) -> Iterator[bytes]:
        return self.inner.iter_bytes(key, piece)

    def size(self, key: str) -> int | None:
        return self.inner.size(key)

    def list(self, prefix: str) -> list[ObjectInfo]:
        return self.inner.list(prefix)

    def move(self, source: str, target: str) -> None:
        self.inner.move(source, target)
        self._wrote()

    def delete(self, key: str) -> None:
        self.inner.delete(key)
        self._wrote()

    def arrow_location(self, prefix: str) -> tuple[pafs.FileSystem, str]:
        return self.inner.arrow_location(prefix)


async def test_a_crash_at_any_write_is_finished_by_the_next_run_and_no_record_is_seen_twice(
    service: Ingest,
) -> None:
    await _fill(service)
    real = service.app[STORAGE].lake
    seen: list[int] = []

    def reader_check() -> None:
        rows = _lake_rows(real)
        assert len(rows) == len(set(rows)), "a reader saw a record twice"
        assert set(rows) <= set(EXPECTED)
        seen.append(len(rows))

    crash_at = 1
    while True:
        watched = WatchedStore(real.store, reader_check, crash_at=crash_at)
        try:
            await compact_lake(
                Lake(watched, real.prefix), _is_recorded(service), closed_before=CLOSED_BEFORE
            )
        except Interrupted:
            # the next run (no crash) finishes the interrupted job
            await compact_lake(real, _is_recorded(service), closed_before=CLOSED_BEFORE)
            assert _lake_rows(real) == EXPECTED
            assert real.store.list("compaction") == []
            files = _partition_files(real)
            assert len(files) == 1 and files[0].startswith(COMPACTED_PREFIX), files
        else:
            break  # the job makes fewer writes than crash_at: every write was a crash point
        _restore(real)
        crash_at += 1
    # staged output, manifest, six deletes, the move, the manifest's delete
    assert watched.writes == crash_at - 1 == 10
    assert _lake_rows(real) == EXPECTED
    assert min(seen) < 60  # between the deletes and the move a reader misses rows, never doubles


def _restore(lake: Lake) -> None:
    """Put the six batch files back in place of the compacted one (a fresh start)."""
    for info in lake.store.list(lake.key(PARTITION)):
        lake.store.delete(info.key)
    for first in range(1, 60, 10):
        batch_id, body = events_batch(first=first, last=first + 9)
        lake.store.put(lake.key(f"{PARTITION}/{batch_id}.parquet"), body)
    assert len(_partition_files(lake)) == 6


async def test_the_compact_command_merges_a_directory_lake(tmp_path: Path) -> None:
    settings = IngestSettings(data_dir=tmp_path / "data", sweep_interval_s=3600)
    async with running_ingest(settings) as ingest:
        await _fill(ingest)
        yardlink = str(Path(sys.executable).parent / "yardlink")
        done = await asyncio.to_thread(
            subprocess.run,
            [yardlink, "ingest", "compact", "--data-dir", str(settings.data_dir)]
            + ["--closed-before", "2026-01-01", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert (report["partitions"], report["files_merged"], report["rows"]) == (1, 6, 60)
        lake = ingest.app[STORAGE].lake
        assert len(_partition_files(lake)) == 1
        assert _lake_rows(lake) == EXPECTED
        bad = await asyncio.to_thread(
            subprocess.run,
            [yardlink, "ingest", "compact", "--data-dir", str(settings.data_dir)]
            + ["--closed-before", "yesterday"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert bad.returncode == 2 and "not a date" in bad.stderr
        assert "Traceback" not in bad.stderr
