"""Checks of one metadata batch against who sent it (pure: bytes in, table or error out).

``decode_batch`` (sync.protocol) checks that the body is Parquet with the
stream's columns; here we also check that the id is the one canonical form of
its range, that the body does not decode to more than a bound (read from the
Parquet metadata, then counted batch by batch, before the table is built),
that every record belongs to the sending device and its site, that the seqs
lie inside the batch id's range and that event times are dates the lake can
partition by.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cloud_ingest.errors import BadBatchId, BatchTooLargeDecoded
from sync.protocol import BatchIdParts, WireFormatError, make_batch_id, parse_batch_id
from sync.protocol.parquet import STREAM_SCHEMAS, decode_batch

__all__ = [
    "EVENT_TIME_RANGE_US",
    "MAX_SEQ",
    "ValidBatch",
    "check_decoded_size",
    "parse_canonical_batch_id",
    "validate_batch",
]

MAX_SEQ = 2**63 - 1  # seqs are signed 64-bit integers (Parquet int64, SQLite INTEGER)
# event_time (us since the epoch, UTC) must fall on a date: 0001-01-01 .. 9999-12-31
EVENT_TIME_RANGE_US = (-62_135_596_800_000_000, 253_402_300_799_999_999)
_SCAN_ROWS = 64  # rows decoded at a time while counting a body's decoded size


@dataclass(frozen=True, slots=True)
class ValidBatch:
    table: pa.Table  # cast to the stream's schema
    body_is_canonical: bool  # the body's own schema is exactly the stream's


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


def check_decoded_size(body: bytes, limit: int) -> None:
    """Refuse (:class:`BatchTooLargeDecoded`) a body that decodes to more than ``limit``
    bytes, using at most about ``limit`` plus one slice of rows of memory.

    First the Parquet metadata (uncompressed page bytes, dictionaries included);
    then the rows are decoded a slice at a time and counted, since a dictionary
    page shared by every row is small on disk and ``rows x value`` once read.
    A body that is not Parquet passes: ``decode_batch`` says why it is not.
    """
    try:
        schema = pq.read_schema(io.BytesIO(body))
        text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_binary(f.type)]
        # string columns come out dictionary-encoded, as stored: counted, not spelled out
        parquet = pq.ParquetFile(io.BytesIO(body), read_dictionary=text)
        meta = parquet.metadata
        declared = sum(
            meta.row_group(g).column(c).total_uncompressed_size
            for g in range(meta.num_row_groups)
            for c in range(meta.num_columns)
        )
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError):
        return
    if declared > limit:
        raise BatchTooLargeDecoded(
            f"batch decodes to more than {limit} bytes ({declared} in its pages); split it"
        )
    decoded = 0
    try:
        for piece in parquet.iter_batches(batch_size=_SCAN_ROWS):
            decoded += sum(_dense_nbytes(column) for column in piece.columns)
            if decoded > limit:
                raise BatchTooLargeDecoded(
                    f"batch decodes to more than {limit} bytes "
                    f"({meta.num_rows} rows sharing large values); split it"
                )
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError):
        return


def _dense_nbytes(array: pa.Array) -> int:
    """Bytes ``array`` takes once dictionary values are spelled out for each row
    (what the cast to the stream's plain schema will allocate)."""
    if not isinstance(array, pa.DictionaryArray):
        return int(array.nbytes)
    values, indices = array.dictionary, array.indices
    if pa.types.is_string(values.type) or pa.types.is_binary(values.type):
        lengths = pc.take(pc.binary_length(values), indices)
        return int(pc.sum(lengths).as_py() or 0) + 8 * len(array)
    per_value = values.nbytes / max(len(values), 1)
    return int(per_value * len(array)) + int(indices.nbytes)


def validate_batch(parts: BatchIdParts, site_id: str, body: bytes) -> ValidBatch:
    """Decode and check a batch body; raises WireFormatError with the reason."""
    try:
        table = decode_batch(parts.stream, body)
    except WireFormatError:
        raise
    except ValueError as exc:  # pyarrow's cast: a null in a column that may hold none
        raise WireFormatError(f"batch columns do not match the schema: {exc}") from exc
    try:
        table.validate(full=True)  # e.g. invalid UTF-8 in a string column
    except (pa.ArrowInvalid, pa.ArrowException) as exc:
        raise WireFormatError(f"batch holds invalid values: {str(exc)[:200]}") from exc
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
    _check_event_times(table.column("event_time"))
    return ValidBatch(table, _is_canonical(parts, body))


def _check_event_times(times: pa.ChunkedArray) -> None:
    if times.null_count:
        raise WireFormatError("records without an event_time")
    lowest, highest = (v.as_py() for v in pc.min_max(times.cast(pa.int64())).values())
    low, high = EVENT_TIME_RANGE_US
    if lowest < low or highest > high:
        raise WireFormatError(
            f"event_time out of range: {lowest if lowest < low else highest} us since the "
            "epoch falls on no date between 0001-01-01 and 9999-12-31"
        )


def _all_equal(table: pa.Table, column: str, expected: str, what: str) -> None:
    values = table.column(column)
    if values.null_count:
        raise WireFormatError(f"records without a {column}")
    mismatched = pc.invert(pc.equal(values, pa.scalar(expected, pa.string())))
    if pc.any(mismatched).as_py():
        other = pc.filter(values, mismatched)[0].cast(pa.binary()).as_py().decode(errors="replace")
        raise WireFormatError(
            f"batch holds records of another {what} "
            f"({column}={other[:80]!r}, expected {expected!r})"
        )


def _is_canonical(parts: BatchIdParts, body: bytes) -> bool:
    try:
        schema = pq.read_schema(io.BytesIO(body))
    except (pa.ArrowException, OSError, ValueError):  # ValueError: a column path not UTF-8
        return False
    return bool(schema.remove_metadata().equals(STREAM_SCHEMAS[parts.stream]))
