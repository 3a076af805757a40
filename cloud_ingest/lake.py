"""The lake: metadata batches as Parquet files in a Hive layout.

``<lake>/<stream>/site=<site>/date=<YYYY-MM-DD>/<batch_id>.parquet`` — readable
by DuckDB (``read_parquet('lake/events/*/*/*.parquet', hive_partitioning=1)``),
Spark and ``pyarrow.dataset`` (``partitioning="hive"``).

``date`` is the UTC date of a record's ``event_time``.  A batch whose records
fall on one date (the usual case) is stored as the bytes the device sent; a
batch that spans midnight is split into one file per date, each named after
the batch.

Files appear atomically: each is written to a hidden temp file (``.``-prefix,
ignored by DuckDB, Spark and pyarrow) in its final directory, fsynced, renamed
into place and the directory fsynced (CONVENTIONS.md 7).  Leftover temp files
from a crash are removed by :func:`remove_partial_files` at start.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cloud_ingest.blobs import fsync_dir
from sync.protocol import PARQUET_COMPRESSION, Stream

__all__ = ["TEMP_PREFIX", "lake_partition", "read_batch", "remove_partial_files", "write_batch"]

TEMP_PREFIX = ".tmp-"


def lake_partition(stream: Stream, site_id: str, day: dt.date) -> Path:
    """Relative directory of one partition."""
    return Path(stream.value) / f"site={site_id}" / f"date={day.isoformat()}"


def write_batch(
    lake_root: Path,
    *,
    stream: Stream,
    site_id: str,
    batch_id: str,
    table: pa.Table,
    body: bytes,
    body_is_canonical: bool,
) -> list[str]:
    """Write one validated batch into the lake; returns the relative paths written.

    ``body`` is written unchanged when ``body_is_canonical`` (its Parquet schema
    is exactly the stream's) and all records share a date; otherwise ``table``
    (already cast to the stream's schema) is re-encoded.  Re-writing the same
    batch id replaces the same file(s) with the same content: idempotent.
    """
    days = _days(table)
    written: list[str] = []
    for day in days:
        relative = lake_partition(stream, site_id, day) / f"{batch_id}.parquet"
        if len(days) == 1:
            payload = body if body_is_canonical else _encode(table)
        else:
            payload = _encode(table.filter(_on_day(table, day)))
        _atomic_write(lake_root / relative, payload)
        written.append(relative.as_posix())
    return written


def read_batch(lake_root: Path, paths: list[str] | tuple[str, ...], schema: pa.Schema) -> pa.Table:
    """The rows of one stored batch (its file per date, rejoined), in seq order.

    Raises ``OSError`` or ``pyarrow.ArrowException`` when a file is gone or unreadable.
    """
    parts = [pq.read_table(lake_root / path, schema=schema) for path in paths]
    return pa.concat_tables(parts).sort_by("seq").combine_chunks()


def remove_partial_files(lake_root: Path) -> int:
    """Delete temp files left by a crash; returns how many were removed."""
    removed = 0
    if not lake_root.exists():
        return 0
    for path in lake_root.rglob(f"{TEMP_PREFIX}*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _days(table: pa.Table) -> list[dt.date]:
    times = table.column("event_time")
    lowest, highest = pc.min_max(times).values()
    first, last = lowest.as_py().date(), highest.as_py().date()
    if first == last:
        return [first]
    unique = pc.unique(pc.cast(times, pa.date32()))
    return sorted(day.as_py() for day in unique)


def _on_day(table: pa.Table, day: dt.date) -> pa.ChunkedArray:
    return pc.equal(pc.cast(table.column("event_time"), pa.date32()), pa.scalar(day, pa.date32()))


def _encode(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION, compression_level=3)
    return sink.getvalue()


def _atomic_write(target: Path, payload: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}-{target.name}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(temp, target)
    fsync_dir(target.parent)
