"""The lake: metadata batches as Parquet files in a Hive layout.

``<lake>/<stream>/site=<site>/date=<YYYY-MM-DD>/<batch_id>.parquet`` — readable
by DuckDB (``read_parquet('lake/events/*/*/*.parquet', hive_partitioning=1)``),
Spark and ``pyarrow.dataset`` (``partitioning="hive"``).

``date`` is the UTC date of a record's ``event_time``.  A batch whose records
fall on one date (the usual case) is stored as the bytes the device sent; a
batch that spans midnight is split into one file per date, each named after
the batch.

Files appear atomically (``sync.shared.durable_file.replace_durably``): each is
written to a temp file ``.<batch_id>.parquet.<random>.tmp`` in its final
directory (hidden from Spark and pyarrow, and matched by no ``*.parquet`` glob,
so DuckDB's ``read_parquet('lake/**/*.parquet')`` never sees half a file),
fsynced, renamed into place and the directory fsynced.  Leftover temp files
from a crash are removed by :func:`remove_partial_files` at start.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sync.protocol import PARQUET_COMPRESSION, Stream
from sync.shared.durable_file import TEMP_SUFFIX, replace_durably

__all__ = ["is_temp_file", "lake_partition", "read_batch", "remove_partial_files", "write_batch"]

_LEGACY_TEMP_PREFIX = ".tmp-"  # temp files of versions before the shared writer


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
        replace_durably(lake_root / relative, payload)
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
    for path in lake_root.rglob(".*"):
        if is_temp_file(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def is_temp_file(name: str) -> bool:
    """A lake temp file (being written, or left by a crash), never a batch file."""
    return name.startswith(_LEGACY_TEMP_PREFIX) or (
        name.startswith(".") and name.endswith(TEMP_SUFFIX)
    )


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
