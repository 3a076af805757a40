"""Metadata micro-batches: which outbox records go together, under which id, as which bytes.

Pure (no I/O): the engine reads records from the outbox and hands them here.

* A batch is a run of consecutive records of one metadata stream, bounded by
  ``batch_max_records`` and ``batch_max_bytes`` (payload bytes).  A batch that
  is not full yet waits until its oldest record is ``batch_max_age_s`` old,
  unless the caller flushes (``sync_now``, or a backlog after reconnecting).
* The id is ``make_batch_id(device, stream, first_seq, last_seq)``.  The engine
  pins the boundary in the outbox *before* sending; after a crash the pinned
  range is rebuilt from the same records with the same encoder, so the cloud
  sees the same id with the same digest and answers "duplicate".
* Each outbox payload is a compact JSON object with the stream schema's
  columns (sync/protocol/parquet.py).  ``seq`` always comes from the outbox record;
  ``device_id`` / ``site_id`` are filled in when the producer left them out.
* The table is built by ``pyarrow.json`` in C++ (sync/batch_columns.py) when
  that gives exactly the row path's table, else row by row in Python.
"""

from __future__ import annotations

import json
import json.scanner
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sync.batch_columns import records_table
from sync.errors import PermanentSyncError
from sync.outbox import BatchBoundary, OutboxRecord
from sync.protocol import Stream, WireFormatError, make_batch_id
from sync.protocol.parquet import encode_batch, encode_table

__all__ = ["BadRecord", "BatchLimits", "EncodedBatch", "cut_batch", "encode_records"]


class BadRecord(PermanentSyncError):
    """An outbox payload that is not a JSON object fitting its stream's schema.

    The stream cannot advance past it without dropping it; the engine holds the
    stream (records kept) and logs the seq so a person can look.
    """

    def __init__(self, stream: Stream, seq: int, reason: str) -> None:
        super().__init__(f"{stream} record seq {seq} is not a valid batch row: {reason}")
        self.stream = stream
        self.seq = seq


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_records: int = 10_000
    max_bytes: int = 4 << 20
    max_age_s: float = 5.0


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """A batch ready to PUT: its boundary (to pin), body and record count."""

    boundary: BatchBoundary
    body: bytes
    records: int
    payload_bytes: int

    @property
    def batch_id(self) -> str:
        return self.boundary.batch_id


def cut_batch(
    records: Sequence[OutboxRecord], limits: BatchLimits, now: float, *, flush: bool = False
) -> tuple[list[OutboxRecord], float]:
    """Choose the records of the next batch from the head of ``records``.

    Returns ``(chosen, wait_s)``: the chosen prefix (empty when it should wait)
    and how long to wait for more when it is empty (``math.inf``: no records).
    ``records`` must be consecutive unacked records of one stream in seq order.
    """
    if not records:
        return [], math.inf
    chosen: list[OutboxRecord] = []
    size = 0
    full = False
    for record in records:
        if chosen and (
            len(chosen) >= limits.max_records or size + len(record.payload) > limits.max_bytes
        ):
            full = True
            break
        chosen.append(record)
        size += len(record.payload)
    full = full or len(chosen) >= limits.max_records or size >= limits.max_bytes
    age = now - chosen[0].created_at
    if full or flush or age >= limits.max_age_s:
        return chosen, 0.0
    return [], limits.max_age_s - age


# The C scanner ``json.loads`` runs after its checks (encoding detection, leading and
# trailing whitespace).  A compact UTF-8 payload that it consumes whole gives exactly
# ``json.loads(payload)`` at about 2/3 of the cost; anything else takes ``json.loads``.
_scan_once = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def _loads(payload: bytes) -> Any:
    try:
        text = payload.decode()
        value, end = _scan_once(text, 0)
    except (StopIteration, ValueError):
        return json.loads(payload)
    return value if end == len(text) else json.loads(payload)


def _row(record: OutboxRecord, device_id: str, site_id: str) -> dict[str, Any]:
    try:
        row = _loads(record.payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRecord(record.stream, record.seq, f"not JSON ({exc})") from exc
    if not isinstance(row, dict):
        raise BadRecord(record.stream, record.seq, f"JSON {type(row).__name__}, not an object")
    row["seq"] = record.seq
    row.setdefault("device_id", device_id)
    row.setdefault("site_id", site_id)
    if row.get("event_time") is None:
        row["event_time"] = record.created_at
    return row


def _encode_rows(
    stream: Stream, records: Sequence[OutboxRecord], device_id: str, site_id: str
) -> bytes:
    """The reference path: one Python dict per record (``records_table`` must match it)."""
    rows = [_row(r, device_id, site_id) for r in records]
    try:
        return encode_batch(stream, rows)
    except WireFormatError:
        for record, row in zip(records, rows, strict=True):  # find the culprit
            try:
                encode_batch(stream, [row])
            except WireFormatError as exc:
                raise BadRecord(stream, record.seq, str(exc)) from exc
        raise


def encode_records(
    stream: Stream, records: Sequence[OutboxRecord], *, device_id: str, site_id: str
) -> EncodedBatch:
    """Encode a chosen run of records as one Parquet batch with its deterministic id.

    Raises :class:`BadRecord` naming the first record that does not fit.
    """
    if not records:
        raise ValueError("a batch needs at least one record")
    table = records_table(stream, records, device_id, site_id)
    if table is not None:
        body = encode_table(table)
    else:
        body = _encode_rows(stream, records, device_id, site_id)
    first, last = records[0].seq, records[-1].seq
    boundary = BatchBoundary(stream, first, last, make_batch_id(device_id, stream, first, last))
    return EncodedBatch(boundary, body, len(records), sum(len(r.payload) for r in records))
