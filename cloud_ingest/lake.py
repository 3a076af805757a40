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

The lake lives in an object store (``object_store.py``): the data directory by
default, or S3, where a single PUT is atomic and no temp object is ever made
under ``lake/``.  A :class:`Lake` is that store and the ``lake/`` prefix; the
functions also take the local lake directory (``DATA_DIR/lake``) for short.
Compaction (``lake_compaction.py``) may merge a closed partition's batch files
into larger ones: :func:`read_batch` then finds a batch's rows by device and
seq in its partitions.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cloud_ingest.object_store import LocalObjectStore, ObjectStore
from sync.protocol import PARQUET_COMPRESSION, Stream
from sync.protocol.parquet import STREAM_SCHEMAS
from sync.shared.durable_file import TEMP_SUFFIX

__all__ = [
    "LAKE",
    "Lake",
    "encode_table",
    "is_temp_file",
    "lake_partition",
    "read_batch",
    "remove_files",
    "remove_partial_files",
    "write_batch",
]

LAKE = "lake"
_LEGACY_TEMP_PREFIX = ".tmp-"
_EPOCH = dt.datetime(
    1970, 1, 1
)  # event times are us since it, UTC  # temp files of versions before the shared writer


@dataclass(frozen=True)
class Lake:
    """The lake: an object store and the key prefix its streams live under."""

    store: ObjectStore
    prefix: str = LAKE

    @classmethod
    def of(cls, lake: Lake | Path) -> Lake:
        """``lake`` itself, or the lake directory ``DATA_DIR/lake`` as a local lake."""
        if isinstance(lake, Lake):
            return lake
        return cls(LocalObjectStore(lake.parent), lake.name)

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}"

    def relative(self, key: str) -> str:
        return key[len(self.prefix) + 1 :]


def lake_partition(stream: Stream, site_id: str, day: dt.date) -> PurePosixPath:
    """Relative directory of one partition."""
    return PurePosixPath(stream.value) / f"site={site_id}" / f"date={day.isoformat()}"


def write_batch(
    lake_root: Lake | Path,
    *,
    stream: Stream,
    site_id: str,
    batch_id: str,
    table: pa.Table,
    body: bytes,
    body_is_canonical: bool,
    event_time_range_us: tuple[int, int] | None = None,
) -> list[str]:
    """Write one validated batch into the lake; returns the relative paths written.

    ``body`` is written unchanged when ``body_is_canonical`` (its Parquet schema
    is exactly the stream's) and all records share a date; otherwise ``table``
    (the stream's columns; strings may be dictionaries) is cast to the stream's
    schema and re-encoded.  ``event_time_range_us`` (the lowest and highest
    event time, known from validation) spares a pass over the times when both
    fall on one date.  Re-writing the same
    batch id replaces the same file(s) with the same content: idempotent.
    """
    lake = Lake.of(lake_root)
    days = _days(table, event_time_range_us)
    written: list[str] = []
    for day in days:
        relative = lake_partition(stream, site_id, day) / f"{batch_id}.parquet"
        if len(days) == 1 and body_is_canonical:
            payload = body
        else:
            rows = table if len(days) == 1 else table.filter(_on_day(table, day))
            payload = encode_table(rows.cast(STREAM_SCHEMAS[stream]))
        lake.store.put(lake.key(relative.as_posix()), payload)
        written.append(relative.as_posix())
    return written


def read_batch(
    lake_root: Lake | Path,
    paths: list[str] | tuple[str, ...],
    schema: pa.Schema,
    *,
    device_id: str | None = None,
    seqs: tuple[int, int] | None = None,
) -> pa.Table:
    """The rows of one stored batch (its file per date, rejoined), in seq order.

    A file that compaction merged away is looked up in its partition: the rows
    of ``device_id`` with a seq in ``seqs`` (both needed for that).  Raises
    ``OSError`` or ``pyarrow.ArrowException`` when the rows cannot be read.
    """
    lake = Lake.of(lake_root)
    parts = []
    for path in paths:
        key = lake.key(path)
        if lake.store.size(key) is not None:
            parts.append(pq.read_table(io.BytesIO(lake.store.get(key)), schema=schema))
        elif device_id is None or seqs is None:
            raise FileNotFoundError(f"lake file {path} is gone")
        else:
            parts.append(_rows_in_partition(lake, path, schema, device_id, seqs))
    return pa.concat_tables(parts).sort_by("seq").combine_chunks()


def _rows_in_partition(
    lake: Lake, path: str, schema: pa.Schema, device_id: str, seqs: tuple[int, int]
) -> pa.Table:
    partition = path.rsplit("/", 1)[0]
    found = [
        pq.read_table(io.BytesIO(lake.store.get(o.key)), schema=schema)
        for o in lake.store.list(lake.key(partition))
        if o.key.endswith(".parquet") and "/" not in lake.relative(o.key)[len(partition) + 1 :]
    ]
    if not found:
        raise FileNotFoundError(f"lake partition {partition} holds no file")
    table = pa.concat_tables(found)
    first, last = seqs
    keep = pc.and_(
        pc.equal(table.column("device_id"), device_id),
        pc.and_(
            pc.greater_equal(table.column("seq"), first), pc.less_equal(table.column("seq"), last)
        ),
    )
    return table.filter(keep)


def remove_files(lake_root: Lake | Path, paths: list[str] | tuple[str, ...]) -> None:
    """Delete lake files by relative path (missing ones are fine)."""
    lake = Lake.of(lake_root)
    for path in paths:
        lake.store.delete(lake.key(path))


def remove_partial_files(lake_root: Lake | Path) -> int:
    """Delete temp files left by a crash; returns how many were removed.

    Only a directory lake has them: an S3 PUT never leaves half an object.
    """
    lake = Lake.of(lake_root)
    if not isinstance(lake.store, LocalObjectStore):
        return 0
    directory = lake.store.path(lake.prefix)
    removed = 0
    if not directory.exists():
        return 0
    for path in directory.rglob(".*"):
        if is_temp_file(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def is_temp_file(name: str) -> bool:
    """A lake temp file (being written, or left by a crash), never a batch file."""
    return name.startswith(_LEGACY_TEMP_PREFIX) or (
        name.startswith(".") and name.endswith(TEMP_SUFFIX)
    )


def _days(table: pa.Table, range_us: tuple[int, int] | None = None) -> list[dt.date]:
    if range_us is not None:
        first, last = (_EPOCH + dt.timedelta(microseconds=us) for us in range_us)
        if first.date() == last.date():
            return [first.date()]
    times = table.column("event_time")
    lowest, highest = pc.min_max(times).values()
    first, last = lowest.as_py().date(), highest.as_py().date()
    if first == last:
        return [first]
    unique = pc.unique(pc.cast(times, pa.date32()))
    return sorted(day.as_py() for day in unique)


def _on_day(table: pa.Table, day: dt.date) -> pa.ChunkedArray:
    return pc.equal(pc.cast(table.column("event_time"), pa.date32()), pa.scalar(day, pa.date32()))


def encode_table(table: pa.Table) -> bytes:
    """One Parquet file of ``table`` as the lake writes it (zstd)."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION, compression_level=3)
    return sink.getvalue()
