"""The Parquet side of protocol v1: each metadata stream's schema, and batch bodies.

Split from ``sync.protocol`` so that what does not build or read batches (the
outbox above all, whose memory is a benchmarked figure) does not load pyarrow
(~35 MB of RSS with numpy).  ``cloud_ingest`` may import this module too: it is
part of the contract.
"""

from __future__ import annotations

import copy
import functools
import io
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from sync.protocol import PARQUET_COMPRESSION, Stream, WireFormatError

__all__ = [
    "COLUMN_ENCODINGS",
    "EVENTS_SCHEMA",
    "GENERIC_SCHEMA",
    "LATER_COLUMNS",
    "RESULT_TYPE",
    "STATISTICS_COLUMNS",
    "STREAM_SCHEMAS",
    "decode_batch",
    "encode_batch",
    "encode_table",
    "writer_options",
]

# --------------------------------------------------------------------------- Parquet schemas

# Columns every metadata record carries (DESIGN.md: device, site, seq, event
# time, model name and version).
_COMMON_FIELDS: Final = [
    pa.field("device_id", pa.string(), nullable=False),
    pa.field("site_id", pa.string(), nullable=False),
    pa.field("seq", pa.int64(), nullable=False),
    pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("model_name", pa.string()),
    pa.field("model_version", pa.string()),
]

RESULT_TYPE: Final = pa.struct(
    [
        pa.field("kind", pa.string()),  # container_code | plate | text | face
        pa.field("value", pa.string()),  # container code in clear, plate as HMAC token
        pa.field("confidence", pa.float32()),
        pa.field("valid", pa.bool_()),  # ISO 6346 check digit ok (container codes)
        pa.field("box", pa.list_(pa.int32())),  # x0, y0, x1, y1 in frame pixels
    ]
)

EVENTS_SCHEMA: Final = pa.schema(
    [
        *_COMMON_FIELDS,
        pa.field("camera_id", pa.string()),
        pa.field("task", pa.string()),
        pa.field("latency_ms", pa.float32()),
        pa.field("sla_violated", pa.bool_()),
        pa.field("results", pa.list_(RESULT_TYPE)),
        pa.field("raw_sha256", pa.string()),  # set when a frame is kept on site
        # X-Frame-Metadata as compact JSON (only the site's allowed keys); added after
        # protocol 1 shipped, so a batch without the column is read as all-null
        pa.field("frame_metadata", pa.string()),
    ]
)

# critical and telemetry: a kind plus a JSON body (aggregates change shape often).
GENERIC_SCHEMA: Final = pa.schema(
    [*_COMMON_FIELDS, pa.field("kind", pa.string()), pa.field("body", pa.string())]
)

# Nullable columns added to a schema after protocol 1 shipped: a batch without one
# (cut by an older device) is read with the column all null, not refused.
LATER_COLUMNS: Final[dict[Stream, tuple[str, ...]]] = {Stream.EVENTS: ("frame_metadata",)}

STREAM_SCHEMAS: Final[dict[Stream, pa.Schema]] = {
    Stream.CRITICAL: GENERIC_SCHEMA,
    Stream.EVENTS: EVENTS_SCHEMA,
    Stream.TELEMETRY: GENERIC_SCHEMA,
}


def encode_batch(stream: Stream, records: list[dict[str, Any]]) -> bytes:
    """Encode metadata records (dicts with the stream's columns) as Parquet + zstd.

    ``event_time`` may be a float (seconds since the epoch, UTC) or a datetime.
    """
    schema = STREAM_SCHEMAS.get(stream)
    if schema is None:
        raise WireFormatError(f"stream {stream} has no batch schema")
    if not records:
        raise WireFormatError("a batch holds at least one record")
    try:
        columns = {name: [record.get(name) for record in records] for name in schema.names}
        if "event_time" in columns:
            columns["event_time"] = [
                int(v * 1_000_000) if isinstance(v, int | float) else v
                for v in columns["event_time"]
            ]
        table = pa.Table.from_pydict(columns, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
        raise WireFormatError(f"records do not fit the {stream} schema: {exc}") from exc
    return encode_table(table)


# ---------------------------------------------------------------- how columns are written

# Encodings other than dictionary + RLE, by Parquet column path (each picked on the
# events the real pipeline writes, docs/BENCHMARKS.md "bytes per event").  Readers
# need nothing to follow them: every page names its encoding.
COLUMN_ENCODINGS: Final[dict[str, str]] = {
    "seq": "DELTA_BINARY_PACKED",  # consecutive: a few bits per block
    "event_time": "DELTA_BINARY_PACKED",  # increasing, nearly regular steps
    "latency_ms": "BYTE_STREAM_SPLIT",  # float bytes grouped: zstd finds the exponents
    "results.list.element.confidence": "BYTE_STREAM_SPLIT",
    "results.list.element.box.list.element": "DELTA_BINARY_PACKED",  # x0,y0,x1,y1 close
    "results.list.element.value": "DELTA_LENGTH_BYTE_ARRAY",  # codes and tokens: unique
    "raw_sha256": "DELTA_BYTE_ARRAY",  # a frame's events repeat its hash: a shared prefix
}
# Min/max statistics only where a lake query filters (row-group pruning); a footer
# entry per column costs bytes in every small batch.
STATISTICS_COLUMNS: Final = frozenset(
    [f.name for f in _COMMON_FIELDS] + ["camera_id", "task", "latency_ms", "sla_violated", "kind"]
)


_ENCODING_FITS: Final = {  # which Arrow types each encoding can write
    "DELTA_BINARY_PACKED": lambda t: pa.types.is_integer(t) or pa.types.is_timestamp(t),
    "BYTE_STREAM_SPLIT": pa.types.is_floating,
    "DELTA_LENGTH_BYTE_ARRAY": pa.types.is_string,
    "DELTA_BYTE_ARRAY": pa.types.is_string,
}


def _leaves(name: str, type_: pa.DataType) -> list[tuple[str, pa.DataType]]:
    """(Parquet column path, type) of each leaf under a field (lists as ``name.list.element``)."""
    if pa.types.is_list(type_):
        return _leaves(f"{name}.list.element", type_.value_type)
    if pa.types.is_struct(type_):
        return [leaf for f in type_ for leaf in _leaves(f"{name}.{f.name}", f.type)]
    return [(name, type_)]


def writer_options(schema: pa.Schema) -> dict[str, Any]:
    """``pq.write_table`` options for a table of ``schema`` (a copy the caller may change).

    Not stored: the Arrow schema in the footer (the Parquet schema says the same
    for these types; ``decode_batch`` casts to the stream's schema anyway).
    """
    return copy.deepcopy(_options(schema))


@functools.cache
def _options(schema: pa.Schema) -> dict[str, Any]:
    leaves = [leaf for f in schema for leaf in _leaves(f.name, f.type)]
    paths = [path for path, _ in leaves]
    encodings = {
        path: COLUMN_ENCODINGS[path]
        for path, type_ in leaves
        if path in COLUMN_ENCODINGS and _ENCODING_FITS[COLUMN_ENCODINGS[path]](type_)
    }
    return {
        "compression": PARQUET_COMPRESSION,
        "compression_level": 3,
        "use_dictionary": [p for p in paths if p not in encodings],
        "column_encoding": encodings,
        "write_statistics": [p for p in paths if p in STATISTICS_COLUMNS],
        "store_schema": False,
    }


def encode_table(table: pa.Table) -> bytes:
    """A batch body from a table that already has its stream's schema (Parquet + zstd)."""
    sink = io.BytesIO()
    try:
        pq.write_table(table, sink, **_options(table.schema))
    except pa.ArrowInvalid as exc:  # e.g. a null in a non-nullable column
        raise WireFormatError(f"records do not fit the batch schema: {exc}") from exc
    return sink.getvalue()


def decode_batch(stream: Stream, body: bytes) -> pa.Table:
    """Parse and validate a batch body; raises WireFormatError with the reason."""
    schema = STREAM_SCHEMAS.get(stream)
    if schema is None:
        raise WireFormatError(f"stream {stream} has no batch schema")
    try:
        table = pq.read_table(io.BytesIO(body))
        names = table.schema.names  # a damaged file may hold names that are not UTF-8
    except (pa.ArrowInvalid, pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise WireFormatError(f"body is not a readable Parquet file: {exc}") from exc
    for name in LATER_COLUMNS.get(stream, ()):
        if name not in names:  # from a device older than the column: all null
            table = table.append_column(
                schema.field(name), pa.nulls(table.num_rows, schema.field(name).type)
            )
            names = table.schema.names
    missing = [n for n in schema.names if n not in names]
    if missing:
        raise WireFormatError(f"batch lacks columns {missing} of the {stream} schema")
    try:
        table = table.select(schema.names).cast(schema)
    except (
        pa.ArrowInvalid,
        pa.ArrowTypeError,
        pa.ArrowNotImplementedError,
        UnicodeDecodeError,
    ) as exc:
        raise WireFormatError(f"batch columns do not match the {stream} schema: {exc}") from exc
    if table.num_rows == 0:
        raise WireFormatError("batch holds no records")
    return table
