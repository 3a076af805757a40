"""A lake file is never half-visible: while it is written, no ``*.parquet`` glob sees it.

Issue 23 section 4. The write is observed at its last moment (the temp file
whole and fsynced, the rename not yet done): DuckDB's
``read_parquet('lake/**/*.parquet')`` and ``pyarrow.dataset`` must see only
the batches already in place.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pytest

from cloud_ingest.lake import is_temp_file, remove_partial_files, write_batch
from sync.protocol import Stream
from sync.protocol.parquet import decode_batch, encode_batch
from sync.shared import durable_file


def _rows_seen(lake: Path) -> tuple[int, int]:
    """(rows DuckDB's recursive *.parquet glob reads, rows pyarrow.dataset reads)."""
    pattern = (lake / "**" / "*.parquet").as_posix()
    try:
        duck = int(duckdb.sql(f"SELECT count(*) FROM read_parquet('{pattern}')").fetchall()[0][0])
    except duckdb.IOException:  # no file matches the glob
        duck = 0
    files = [p for p in lake.rglob("*") if p.is_file()]
    arrow = ds.dataset(lake, format="parquet", partitioning="hive").count_rows() if files else 0
    return duck, arrow


def test_a_lake_file_being_written_is_matched_by_no_glob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = tmp_path / "lake"
    seen: list[tuple[str, tuple[int, int]]] = []
    real_replace = os.replace

    def replace_watched(source: str | Path, target: str | Path) -> None:
        seen.append((Path(source).name, _rows_seen(lake)))  # temp whole, rename not done
        real_replace(source, target)

    monkeypatch.setattr(durable_file.os, "replace", replace_watched)
    for first in (1, 11):
        records = [
            {"device_id": "gate-01", "site_id": "yard-a", "seq": seq, "event_time": 1.764e9 + seq}
            for seq in range(first, first + 10)
        ]
        body = encode_batch(Stream.EVENTS, records)
        write_batch(
            lake,
            stream=Stream.EVENTS,
            site_id="yard-a",
            batch_id=f"gate-01.events.{first}-{first + 9}",
            table=decode_batch(Stream.EVENTS, body),
            body=body,
            body_is_canonical=True,
        )
    assert [rows for _, rows in seen] == [(0, 0), (10, 10)]  # never the file in flight
    assert all(is_temp_file(name) and not name.endswith(".parquet") for name, _ in seen)
    assert _rows_seen(lake) == (20, 20)


def test_temp_files_left_by_a_crash_are_removed_at_start(tmp_path: Path) -> None:
    partition = tmp_path / "lake" / "events" / "site=yard-a" / "date=2025-11-24"
    partition.mkdir(parents=True)
    left = [
        partition / ".gate-01.events.1-10.parquet.k2j4x9.tmp",  # this version's temp name
        partition / ".tmp-0f3a-gate-01.events.1-10.parquet",  # an older version's
    ]
    for path in left:
        path.write_bytes(b"half a file")
    kept = partition / "gate-01.events.11-20.parquet"
    kept.write_bytes(b"PAR1")
    assert remove_partial_files(tmp_path / "lake") == 2
    assert [p.name for p in partition.iterdir()] == [kept.name]
