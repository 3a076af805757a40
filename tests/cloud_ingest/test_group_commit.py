"""Group commit: concurrent batches share one catalog transaction, each answered
for itself; a batch refused beside a good one leaves nothing, the good one is kept."""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cloud_ingest.app_keys import CATALOG
from cloud_ingest.catalog import BatchRecord, Catalog
from cloud_ingest.credentials import hash_token
from cloud_ingest.group_commit import GroupCommit
from cloud_ingest.settings import IngestSettings
from sync.protocol import Stream, make_batch_id
from sync.protocol.parquet import EVENTS_SCHEMA, encode_batch
from tests.support.ingest import (
    PARQUET,
    Ingest,
    bearer,
    event_records,
    events_batch,
    running_ingest,
)


async def test_items_submitted_together_are_committed_in_one_group() -> None:
    groups: list[list[int]] = []

    async def commit(items: list[int]) -> list[int]:
        groups.append(items)
        await asyncio.sleep(0)
        return [item * 10 for item in items]

    commits: GroupCommit[int, int] = GroupCommit(commit)
    results = await asyncio.gather(*(commits.submit(n) for n in range(10)))
    assert results == [n * 10 for n in range(10)]
    assert groups == [list(range(10))]


async def test_a_failed_commit_fails_its_group_and_the_next_group_commits() -> None:
    groups: list[list[str]] = []
    first_running = asyncio.Event()
    release = asyncio.Event()

    async def commit(items: list[str]) -> list[str]:
        groups.append(items)
        if "bad" in items:
            first_running.set()
            await release.wait()
            raise OSError("disk full")
        return [item.upper() for item in items]

    commits: GroupCommit[str, str] = GroupCommit(commit, max_group=8)
    failing = asyncio.ensure_future(commits.submit("bad"))
    await first_running.wait()
    later = [asyncio.ensure_future(commits.submit(name)) for name in ("a", "b")]
    release.set()
    with pytest.raises(OSError, match="disk full"):
        await failing
    assert await asyncio.gather(*later) == ["A", "B"]
    assert groups == [["bad"], ["a", "b"]]
    await commits.drain()


def _record(batch_id: str, first: int, last: int, sha: str = "aa") -> BatchRecord:
    return BatchRecord(
        batch_id,
        "gate-01",
        "yard-a",
        Stream.EVENTS,
        first,
        last,
        last - first + 1,
        sha * 32,
        100,
        (f"events/site=yard-a/date=2025-01-01/{batch_id}.parquet",),
        1.0,
    )


async def test_concurrent_records_each_get_the_record_held_under_their_id(
    catalog: Catalog,
) -> None:
    await catalog.add_device("gate-01", "yard-a", hash_token("t"), 1.0, actor="test")
    first = _record("gate-01.events.1-10", 1, 10)
    other_bytes = replace(first, sha256="bb" * 32)
    rest = [_record(f"gate-01.events.{n}1-{n + 1}0", n * 10 + 1, n * 10 + 10) for n in range(1, 9)]
    answers = await asyncio.gather(
        catalog.record_batch(first),
        catalog.record_batch(other_bytes),
        *map(catalog.record_batch, rest),
    )
    assert answers[0] is first  # the first writer's own record
    assert answers[1] == first  # the same id in other bytes: what is held
    assert answers[2:] == rest
    assert await catalog.watermarks("gate-01") == {Stream.EVENTS: 90}
    for record in [first, *rest]:
        assert await catalog.get_batch(record.batch_id) == record


def _lake_files(ingest: Ingest) -> list[str]:
    lake = ingest.settings.lake_dir
    return sorted(p.relative_to(lake).as_posix() for p in lake.rglob("*") if p.is_file())


async def test_a_refused_batch_beside_a_good_one_leaves_nothing(ingest: Ingest) -> None:
    token = await ingest.device()
    good_id, good = events_batch(first=1, last=10)
    records = event_records("gate-01", "yard-a", range(11, 21))
    records[4]["device_id"] = "gate-02"  # mis-declared: a record of another device
    bad_id = make_batch_id("gate-01", Stream.EVENTS, 11, 20)
    bad = encode_batch(Stream.EVENTS, records)
    answers = await asyncio.gather(
        *(
            ingest.client.put(f"/v1/batches/{i}", data=b, headers=bearer(token) | PARQUET)
            for i, b in ((good_id, good), (bad_id, bad))
        )
    )
    assert [a.status for a in answers] == [201, 400]
    assert "another device" in (await answers[1].json())["detail"]
    assert _lake_files(ingest) == [f"events/site=yard-a/date=2025-11-24/{good_id}.parquet"]
    catalog = ingest.app[CATALOG]
    assert await catalog.get_batch(bad_id) is None
    assert await catalog.get_batch(good_id) is not None
    assert await catalog.watermarks("gate-01") == {Stream.EVENTS: 10}


async def test_a_dictionary_bomb_beside_a_delta_encoded_column_is_413(tmp_path: Path) -> None:
    """A delta-encoded string column once made the decoded-size count give up
    (pyarrow reads no such column as a dictionary): the bomb beside it was decoded."""
    rows = 200
    table = pa.Table.from_pylist(
        event_records("gate-01", "yard-a", range(1, rows + 1)), schema=EVENTS_SCHEMA
    )
    big = pa.DictionaryArray.from_arrays(
        pa.array([0] * rows, pa.int32()), pa.array(["x" * (1 << 16)], pa.string())
    )
    column = table.schema.get_field_index("frame_metadata")
    table = table.set_column(column, pa.field("frame_metadata", big.type), big)
    sink = io.BytesIO()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        use_dictionary=["frame_metadata"],
        column_encoding={"raw_sha256": "DELTA_BYTE_ARRAY"},
    )
    settings = IngestSettings(
        data_dir=tmp_path / "data", sweep_interval_s=3600, max_decoded_batch_bytes=4 << 20
    )
    async with running_ingest(settings) as ingest:
        token = await ingest.device()
        response = await ingest.client.put(
            f"/v1/batches/gate-01.events.1-{rows}",
            data=sink.getvalue(),
            headers=bearer(token) | PARQUET,
        )
        assert response.status == 413, await response.text()
        assert (await response.json())["error"] == "batch_too_large_decoded"
        assert _lake_files(ingest) == []
