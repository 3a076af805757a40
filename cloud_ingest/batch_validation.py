"""Checks of one metadata batch against who sent it (pure: bytes in, table or error out).

One pass over the body: that it is Parquet with the stream's columns (the
schema from its footer), that it does not decode to more than a bound (the
footer's page sizes, then the rows counted slice by slice as they are read:
a body is decoded once), that every value is valid (UTF-8 strings), that every
record belongs to the sending device and its site, that the seqs lie inside
the batch id's range and that event times are dates the lake can partition by.
Every column is decoded, not only those checked: a file in the lake is one
that readers (and compaction) can read whole.  The id is checked to be the one
canonical form of its range.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cloud_ingest.errors import BadBatchId, BatchTooLargeDecoded
from sync.protocol import BatchIdParts, WireFormatError, make_batch_id, parse_batch_id
from sync.protocol.parquet import LATER_COLUMNS, STREAM_SCHEMAS

__all__ = [
    "DEFAULT_MAX_DECODED_BYTES",
    "EVENT_TIME_RANGE_US",
    "MAX_SEQ",
    "ValidBatch",
    "parse_canonical_batch_id",
    "validate_batch",
]

MAX_SEQ = 2**63 - 1  # seqs are signed 64-bit integers (Parquet int64, SQLite INTEGER)
# event_time (us since the epoch, UTC) must fall on a date: 0001-01-01 .. 9999-12-31
EVENT_TIME_RANGE_US = (-62_135_596_800_000_000, 253_402_300_799_999_999)
DEFAULT_MAX_DECODED_BYTES = 256 << 20  # the service's max_decoded_batch_bytes default
_SCAN_ROWS = 64  # fewest rows read in one slice
_MAX_SLICE_ROWS = 16_384
_SLICE_SHARE = 16  # a slice of rows like the first ones takes at most limit / this
_DICTIONARY_ENCODINGS = frozenset({"PLAIN_DICTIONARY", "RLE_DICTIONARY"})
_AMPLIFYING_ENCODINGS = _DICTIONARY_ENCODINGS | {"DELTA_BYTE_ARRAY"}
# chunks pyarrow can read as a dictionary (a page that fell back to PLAIN included)
_DICTIONARY_READABLE = _DICTIONARY_ENCODINGS | {"PLAIN", "RLE", "BIT_PACKED"}


@dataclass(frozen=True, slots=True)
class ValidBatch:
    """A checked batch: its rows in the stream's columns and types, except that a
    canonical body's strings stored as dictionaries are kept as dictionaries (a
    cast the common path, which stores the body unchanged, does not need)."""

    table: pa.Table
    schema: pa.Schema  # the stream's
    body_is_canonical: bool  # the body's own schema is exactly the stream's
    event_time_range_us: tuple[int, int]  # the lowest and highest event_time

    def stream_table(self) -> pa.Table:
        """The rows cast to the stream's schema (dictionaries spelled out)."""
        return self.table.cast(self.schema)


def parse_canonical_batch_id(raw_id: str) -> BatchIdParts:
    """The parts of a batch id in its one canonical form; :class:`BadBatchId` otherwise.

    ``0400-401`` names the records of ``400-401``; taking both would store them twice.
    """
    try:
        parts = parse_batch_id(raw_id)
    except WireFormatError as exc:
        raise BadBatchId(str(exc)) from exc
    if parts.last_seq > MAX_SEQ:
        raise BadBatchId(f"batch id {raw_id[:100]!r}: seq out of range (at most {MAX_SEQ})")
    canonical = make_batch_id(parts.device_id, parts.stream, parts.first_seq, parts.last_seq)
    if canonical != raw_id:
        raise BadBatchId(f"batch id {raw_id[:100]!r} is not canonical: send it as {canonical!r}")
    return parts


def validate_batch(
    parts: BatchIdParts,
    site_id: str,
    body: bytes,
    *,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> ValidBatch:
    """Decode and check a batch body in one pass; raises :class:`WireFormatError` with
    the reason, or :class:`BatchTooLargeDecoded` when it decodes to more than
    ``max_decoded_bytes``."""
    stream_schema = STREAM_SCHEMAS[parts.stream]
    parquet, schema = _open(body)
    missing = [n for n in stream_schema.names if n not in schema.names and n not in _later(parts)]
    if missing:
        raise WireFormatError(f"batch lacks columns {missing} of the {parts.stream} schema")
    columns = [n for n in stream_schema.names if n in schema.names]
    footer = _read_footer(parquet.metadata, schema, columns, max_decoded_bytes)
    table = _read_counted(body, parquet, footer, columns, max_decoded_bytes)
    try:
        table.validate(full=True)  # e.g. invalid UTF-8 in a string column
    except (pa.ArrowInvalid, pa.ArrowException) as exc:
        raise WireFormatError(f"batch holds invalid values: {str(exc)[:200]}") from exc
    canonical = bool(schema.remove_metadata().equals(stream_schema))
    if not canonical:
        table = _to_stream_schema(parts, table, stream_schema)
    _all_equal(table, "device_id", parts.device_id, "device")
    _all_equal(table, "site_id", site_id, "site")
    seq = table.column("seq")
    if seq.null_count:
        raise WireFormatError("records without a seq")
    lowest, highest = (s.as_py() for s in pc.min_max(seq).values())
    if lowest < parts.first_seq or highest > parts.last_seq:
        raise WireFormatError(
            f"record seqs {lowest}-{highest} lie outside the batch id's range "
            f"{parts.first_seq}-{parts.last_seq}"
        )
    event_times = _check_event_times(table.column("event_time"))
    return ValidBatch(table, stream_schema, canonical, event_times)


def _open(body: bytes) -> tuple[pq.ParquetFile, pa.Schema]:
    try:
        parquet = pq.ParquetFile(pa.BufferReader(body))
        schema = parquet.schema_arrow
        _ = schema.names  # a damaged file may hold names that are not UTF-8
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as exc:
        raise WireFormatError(f"body is not a readable Parquet file: {exc}") from exc
    return parquet, schema


def _later(parts: BatchIdParts) -> tuple[str, ...]:
    return LATER_COLUMNS.get(parts.stream, ())


@dataclass(frozen=True, slots=True)
class _Footer:
    """What the footer says about reading the stream's columns, gathered in one walk."""

    dictionary_columns: list[str]  # string columns pyarrow can read as dictionaries
    slice_rows: int  # rows read in one slice


def _read_footer(
    meta: pq.FileMetaData, schema: pa.Schema, columns: list[str], limit: int
) -> _Footer:
    """One walk over the footer's column chunks: the declared uncompressed page bytes
    (dictionaries counted once; :class:`BatchTooLargeDecoded` past ``limit``), the
    columns to read as dictionaries, and the rows of a slice."""
    wanted = set(columns)
    chunks: list[tuple[int, str, int, int, frozenset[str]]] = []  # group, column, ...
    group_rows: list[int] = []
    declared = 0
    try:
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            group_rows.append(max(group.num_rows, 1))
            for c in range(group.num_columns):
                chunk = group.column(c)
                size = chunk.total_uncompressed_size
                declared += size
                name = chunk.path_in_schema
                if name.split(".", 1)[0] in wanted:
                    chunks.append((g, name, size, chunk.num_values, frozenset(chunk.encodings)))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise WireFormatError(f"body is not a readable Parquet file: {exc}") from exc
    if declared > limit:
        raise BatchTooLargeDecoded(
            f"batch decodes to more than {limit} bytes ({declared} in its pages); split it"
        )
    dictionary = _dictionary_columns(chunks, schema, columns)
    return _Footer(dictionary, _slice_rows(chunks, group_rows, set(dictionary), limit))


def _read_counted(
    body: bytes, parquet: pq.ParquetFile, footer: _Footer, columns: list[str], limit: int
) -> pa.Table:
    """The ``columns`` of ``body``, read a slice of rows at a time, each slice's bytes
    counted as they will be once dictionary values are spelled out for each row (a
    dictionary page shared by every row is small on disk and ``rows x value`` once
    read): :class:`BatchTooLargeDecoded` past ``limit``.

    String columns stored as dictionaries are read as dictionaries (counted, not
    spelled out).  A slice holds as many rows as the footer says fit in ``limit /
    _SLICE_SHARE`` (``_slice_rows``): rows sharing large values are read a few at
    a time, a batch of small rows in one slice.
    """
    try:
        reader = pq.ParquetFile(
            pa.BufferReader(body),
            metadata=parquet.metadata,
            read_dictionary=footer.dictionary_columns,
        )
        decoded, slices = 0, []
        for piece in reader.iter_batches(footer.slice_rows, columns=columns, use_threads=False):
            decoded = _counted_nbytes(piece, decoded, limit)
            slices.append(piece)
        table = pa.Table.from_batches(slices) if slices else None
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as exc:
        raise WireFormatError(f"body is not a readable Parquet file: {exc}") from exc
    if table is None or table.num_rows == 0:
        raise WireFormatError("batch holds no records")
    return table


def _slice_rows(
    chunks: list[tuple[int, str, int, int, frozenset[str]]],
    group_rows: list[int],
    dictionary: set[str],
    limit: int,
) -> int:
    """Rows per slice: a row is taken to decode to at most, per column chunk of its
    row group, its uncompressed bytes per row; or (dictionary or delta-prefix
    encoded and read spelled out: one short value on disk may stand for many long
    ones) its whole uncompressed bytes per value; a column read as a dictionary
    takes its dictionary (at most its uncompressed bytes) and an index per value.
    The largest row group's rows count."""
    per_group = [1.0] * len(group_rows)
    for group, name, size, num_values, encodings in chunks:
        rows = group_rows[group]
        values_per_row = max(num_values, 1) / rows
        if name in dictionary:
            per_row = size / rows + 16 * values_per_row
        elif encodings & _AMPLIFYING_ENCODINGS:
            per_row = (size + 16) * values_per_row
        else:
            per_row = size / rows + 16 * values_per_row
        per_group[group] += per_row
    worst = max(per_group, default=1.0)
    return int(min(max(limit // _SLICE_SHARE / worst, _SCAN_ROWS), _MAX_SLICE_ROWS))


def _counted_nbytes(piece: pa.RecordBatch, decoded: int, limit: int) -> int:
    """``decoded`` plus the bytes of ``piece`` (an upper bound while that is within
    ``limit``, else exact); :class:`BatchTooLargeDecoded` past ``limit``."""
    bound = decoded + sum(_dense_nbytes(column, exact=False) for column in piece.columns)
    if bound <= limit:
        return bound
    decoded += sum(_dense_nbytes(column, exact=True) for column in piece.columns)
    if decoded > limit:
        raise BatchTooLargeDecoded(
            f"batch decodes to more than {limit} bytes (rows sharing large values); split it"
        )
    return decoded


def _dense_nbytes(array: pa.Array, *, exact: bool) -> int:
    """Bytes ``array`` takes once dictionary values are spelled out for each row
    (what the cast to the stream's plain schema will allocate); with ``exact``
    False, at most that many times the longest value, cheaper to count (a
    one-entry dictionary, the usual device, site or model column: its bytes, with
    no compute call)."""
    if not isinstance(array, pa.DictionaryArray):
        return int(array.nbytes)
    values, indices = array.dictionary, array.indices
    if pa.types.is_string(values.type) or pa.types.is_binary(values.type):
        if not exact:
            if len(values) <= 1:
                return (int(values.nbytes) + 8) * len(array)
            lengths = pc.binary_length(values)
            return (int(pc.max(lengths).as_py() or 0) + 8) * len(array)
        lengths = pc.binary_length(values)
        return int(pc.sum(pc.take(lengths, indices)).as_py() or 0) + 8 * len(array)
    per_value = values.nbytes / max(len(values), 1)
    return int(per_value * len(array)) + int(indices.nbytes)


def _dictionary_columns(
    chunks: list[tuple[int, str, int, int, frozenset[str]]],
    schema: pa.Schema,
    columns: list[str],
) -> list[str]:
    """Top-level string columns every chunk of which is dictionary-encoded (pyarrow
    reads those as dictionaries; not, for one, a delta-encoded chunk)."""
    encodings: dict[str, list[frozenset[str]]] = {}
    for _, name, _, _, chunk_encodings in chunks:
        encodings.setdefault(name, []).append(chunk_encodings)
    return [
        name
        for name in columns
        if (
            pa.types.is_string(schema.field(name).type)
            or pa.types.is_binary(schema.field(name).type)
        )
        and encodings.get(name)
        and all(e & _DICTIONARY_ENCODINGS and e <= _DICTIONARY_READABLE for e in encodings[name])
    ]


def _to_stream_schema(parts: BatchIdParts, table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with the stream's columns, in its order and types (a column added to
    the schema after the device's version is all null)."""
    for name in _later(parts):
        if name not in table.schema.names:  # from a device older than the column
            field = schema.field(name)
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    try:
        table = table.select(schema.names).cast(schema)
    except (
        pa.ArrowInvalid,
        pa.ArrowTypeError,
        pa.ArrowNotImplementedError,
        UnicodeDecodeError,
        ValueError,  # a null in a column that may hold none
    ) as exc:
        raise WireFormatError(
            f"batch columns do not match the {parts.stream} schema: {exc}"
        ) from exc
    return table


def _check_event_times(times: pa.ChunkedArray) -> tuple[int, int]:
    """The lowest and highest event time (us since the epoch), each on a date."""
    if times.null_count:
        raise WireFormatError("records without an event_time")
    lowest, highest = (v.as_py() for v in pc.min_max(times.cast(pa.int64())).values())
    low, high = EVENT_TIME_RANGE_US
    if lowest < low or highest > high:
        raise WireFormatError(
            f"event_time out of range: {lowest if lowest < low else highest} us since the "
            "epoch falls on no date between 0001-01-01 and 9999-12-31"
        )
    return lowest, highest


def _all_equal(table: pa.Table, column: str, expected: str, what: str) -> None:
    values = table.column(column)
    if values.null_count:
        raise WireFormatError(f"records without a {column}")
    if _only_value_in_dictionaries(values, expected):
        return
    mismatched = pc.invert(pc.equal(values, pa.scalar(expected, pa.string())))
    if pc.any(mismatched).as_py():
        other = pc.filter(values, mismatched)[0].cast(pa.binary()).as_py().decode(errors="replace")
        raise WireFormatError(
            f"batch holds records of another {what} "
            f"({column}={other[:80]!r}, expected {expected!r})"
        )


def _only_value_in_dictionaries(values: pa.ChunkedArray, expected: str) -> bool:
    """Whether ``values`` is read as dictionaries whose only entry is ``expected``
    (then every row holds it: no pass over the rows needed)."""
    for chunk in values.chunks:
        if not isinstance(chunk, pa.DictionaryArray) or len(chunk.dictionary) != 1:
            return False
        if chunk.dictionary[0].as_py() != expected:
            return False
    return True
