"""Checks of one metadata batch against who sent it (pure: bytes in, table or error out).

``decode_batch`` (sync.protocol) checks that the body is Parquet with the
stream's columns; here we also check that every record belongs to the
sending device and its site, and that the seqs lie inside the batch id's range.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sync.protocol import BatchIdParts, WireFormatError
from sync.protocol.parquet import STREAM_SCHEMAS, decode_batch

__all__ = ["ValidBatch", "validate_batch"]


@dataclass(frozen=True, slots=True)
class ValidBatch:
    table: pa.Table  # cast to the stream's schema
    body_is_canonical: bool  # the body's own schema is exactly the stream's


def validate_batch(parts: BatchIdParts, site_id: str, body: bytes) -> ValidBatch:
    """Decode and check a batch body; raises WireFormatError with the reason."""
    table = decode_batch(parts.stream, body)
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
    if table.column("event_time").null_count:
        raise WireFormatError("records without an event_time")
    return ValidBatch(table, _is_canonical(parts, body))


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
    except (pa.ArrowException, OSError):
        return False
    return bool(schema.remove_metadata().equals(STREAM_SCHEMAS[parts.stream]))
