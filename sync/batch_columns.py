"""Outbox JSON payloads -> the stream's Arrow table in C++ (pyarrow.json), or ``None``.

The row path (``_encode_rows`` in sync/batches.py) builds a batch's table in Python:
``json`` per payload, then ``pa.Table.from_pydict``.  That costs ~30 us per event
record and holds the GIL all along, so the encoder competed with the event loop
that feeds the link.  Here the payloads are joined as JSON lines and parsed by
``pyarrow.json`` (C++, GIL released); seq, the device and site defaults and
``event_time`` are then applied column-wise with the same rules as ``_row``.

The result must be the table the row path builds - same values, same Parquet
bytes - because a batch pinned before a crash (or an upgrade) is re-encoded and
the cloud compares digests.  So this path answers only when it is sure and
returns ``None`` otherwise; the caller then takes the row path, which also
names a bad record.  It returns ``None`` when:

* the joined payloads are not UTF-8, hold a control character (the row path's
  strict ``json`` refuses them in strings), or some payload does not start with
  ``{`` or holds a line break (one payload, one line, one object: pyarrow.json
  crashes on a top-level ``null`` first line);
* pyarrow.json refuses the lines (a type mismatch, a duplicate key, a lone
  surrogate, ...) or finds another number of rows;
* ``device_id`` / ``site_id`` is null in a payload that names the key (the row
  path fills only a missing key);
* ``event_time`` is not finite or beyond year 2255 (where an integer's
  ``int(v * 1e6)`` and the float product could differ);
* a float32 column holds an integral value beyond 2**24 (the row path refuses
  an integer that float32 cannot hold exactly; the JSON reader cannot tell
  ``3`` from ``3.0``).

tests/sync/test_batch_columns.py compares both paths' bytes on generated payloads.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from sync.outbox import OutboxRecord
from sync.protocol import Stream
from sync.protocol.parquet import STREAM_SCHEMAS

__all__ = ["records_table"]

_CONTROL: Final = [bytes([b]) for b in range(32) if b != ord("\n")]
_BLOCK_BYTES: Final = 256 << 10  # blocks parsed in parallel (lines never span two)
_FLOAT32_EXACT: Final = float(1 << 24)
# int(v * 1e6) of an integer v equals the float product below 2**53 microseconds.
_EVENT_TIME_MAX_S: Final = float(1 << 53) / 1e6
_DEFAULTED: Final = ("device_id", "site_id")


def _as_read(dtype: pa.DataType) -> pa.DataType:
    """The type pyarrow.json reads for ``dtype``: floats as float64 (cast after checks)."""
    if pa.types.is_float32(dtype):
        return pa.float64()
    if pa.types.is_list(dtype):
        return pa.list_(_as_read(dtype.value_type))
    if pa.types.is_struct(dtype):
        return pa.struct([f.with_type(_as_read(f.type)) for f in dtype])
    return dtype


def _read_schema(schema: pa.Schema) -> pa.Schema:
    fields = []
    for field in schema:
        if field.name == "seq":
            continue  # always the outbox record's seq
        dtype = pa.float64() if field.name == "event_time" else _as_read(field.type)
        fields.append(pa.field(field.name, dtype))
    return pa.schema(fields)


_READ_SCHEMAS: Final = {s: _read_schema(schema) for s, schema in STREAM_SCHEMAS.items()}


def _float32_leaves(array: pa.Array, dtype: pa.DataType) -> list[pa.Array]:
    """The float64 arrays inside ``array`` that become float32 in ``dtype``."""
    if pa.types.is_float32(dtype):
        return [array]
    if pa.types.is_list(dtype):
        return _float32_leaves(array.flatten(), dtype.value_type)
    if pa.types.is_struct(dtype):
        leaves = []
        for i, field in enumerate(dtype):
            leaves += _float32_leaves(array.field(i), field.type)
        return leaves
    return []


def _float32_exact(values: pa.Array) -> bool:
    big = pc.greater(pc.abs(values), _FLOAT32_EXACT)
    integral = pc.equal(pc.trunc(values), values)
    return not pc.any(pc.and_(big, integral)).as_py()


def records_table(
    stream: Stream, records: Sequence[OutboxRecord], device_id: str, site_id: str
) -> pa.Table | None:
    """The table ``encode_batch`` would build from ``_row`` of each record, or ``None``."""
    schema = STREAM_SCHEMAS.get(stream)
    if schema is None or not records:
        return None
    payloads = [r.payload for r in records]
    if not all(p.startswith(b"{") for p in payloads):
        return None
    lines = b"\n".join(payloads)
    if lines.count(b"\n") != len(payloads) - 1 or any(c in lines for c in _CONTROL):
        return None
    try:
        lines.decode()
    except UnicodeDecodeError:
        return None
    try:
        read = pj.read_json(
            io.BytesIO(lines),
            read_options=pj.ReadOptions(use_threads=True, block_size=_BLOCK_BYTES),
            parse_options=pj.ParseOptions(
                explicit_schema=_READ_SCHEMAS[stream], unexpected_field_behavior="ignore"
            ),
        ).combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if read.num_rows != len(payloads):
        return None
    columns: dict[str, pa.Array] = {}
    for name, default in zip(_DEFAULTED, (device_id, site_id), strict=True):
        column = read.column(name).chunk(0)
        if column.null_count:
            key = f'"{name}"'.encode()
            if key in lines:  # a null the producer wrote stays null in the row path
                nulls = pc.indices_nonzero(column.is_null()).to_pylist()
                if any(key in payloads[i] for i in nulls):
                    return None
            column = column.fill_null(default)
        columns[name] = column
    columns["seq"] = pa.array([r.seq for r in records], pa.int64())
    seconds = read.column("event_time").chunk(0)
    if seconds.null_count:
        created = pa.array([r.created_at for r in records], pa.float64())
        seconds = pc.if_else(seconds.is_null(), created, seconds)
    if not pc.all(pc.less(pc.abs(seconds), _EVENT_TIME_MAX_S)).as_py():
        return None  # also false for NaN
    micros = pc.trunc(pc.multiply(seconds, 1_000_000.0)).cast(pa.int64())
    columns["event_time"] = micros.cast(pa.timestamp("us", tz="UTC"))
    for field in schema:
        if field.name in columns:
            continue
        column = read.column(field.name).chunk(0)
        for leaf in _float32_leaves(column, field.type):
            if not _float32_exact(leaf):
                return None
        columns[field.name] = column if column.type == field.type else column.cast(field.type)
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
