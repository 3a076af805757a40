"""Rows of the catalog as either backend reads and writes them: the SELECT lists,
the row-to-record mapping, and the values of each INSERT (in the order of its
column list) and of its audit event, shared by SQLite (``catalog_sqlite.py``)
and PostgreSQL (``catalog_postgres.py``) so that both store and answer the
same; only the SQL itself (placeholders, upserts) is each dialect's."""

from __future__ import annotations

import json
from typing import Any, Protocol

from cloud_ingest.catalog import BatchRecord, DeviceRecord, RawRequestRecord, UploadRecord
from sync.protocol import Stream

__all__ = [
    "BATCH_COLUMNS",
    "BATCH_SELECT",
    "BLOB_COLUMNS",
    "DEVICE_SELECT",
    "RAW_INSERT_COLUMNS",
    "RAW_SELECT",
    "UPLOAD_COLUMNS",
    "Row",
    "batch_row",
    "batch_values",
    "blob_values",
    "device_row",
    "raw_request_audit",
    "raw_request_values",
    "raw_row",
    "upload_audit",
    "upload_values",
]


class Row(Protocol):
    """An aiosqlite row or an asyncpg record: fields by position."""

    def __getitem__(self, index: int, /) -> Any: ...
    def __len__(self) -> int: ...


DEVICE_SELECT = (
    "SELECT device_id, site_id, created_at, revoked_at, last_sync_at, last_sync FROM devices"
)
BATCH_COLUMNS = (
    "batch_id, device_id, site_id, stream, first_seq, last_seq, records, sha256, size,"
    " lake_paths, received_at"
)
BATCH_SELECT = f"SELECT {BATCH_COLUMNS} FROM batches"
RAW_INSERT_COLUMNS = (
    "request_id, device_id, seq, since, until, reason, state, created_by, created_at, expires_at"
)
UPLOAD_COLUMNS = "upload_id, device_id, length, sha256, metadata, completed_at"
BLOB_COLUMNS = "sha256, size, device_id, upload_id, stored_at"
RAW_SELECT = (
    "SELECT request_id, device_id, created_by, created_at, expires_at, state, seq, since, until,"
    " reason, state_changed_at, upload_id FROM raw_requests"
)


def device_row(row: Row) -> DeviceRecord:
    last_sync = json.loads(row[5]) if row[5] else None
    return DeviceRecord(row[0], row[1], row[2], row[3], row[4], last_sync)


def batch_row(row: Row) -> BatchRecord:
    return BatchRecord(
        batch_id=row[0],
        device_id=row[1],
        site_id=row[2],
        stream=Stream(row[3]),
        first_seq=row[4],
        last_seq=row[5],
        records=row[6],
        sha256=row[7],
        size=row[8],
        lake_paths=tuple(json.loads(row[9])),
        received_at=row[10],
    )


def raw_row(row: Row) -> RawRequestRecord:
    return RawRequestRecord(*(row[i] for i in range(len(row))))


def batch_values(batch: BatchRecord) -> tuple[Any, ...]:
    """The values of ``BATCH_COLUMNS`` for ``batch``."""
    return (
        batch.batch_id,
        batch.device_id,
        batch.site_id,
        batch.stream.value,
        batch.first_seq,
        batch.last_seq,
        batch.records,
        batch.sha256,
        batch.size,
        json.dumps(list(batch.lake_paths)),
        batch.received_at,
    )


def raw_request_values(request: RawRequestRecord) -> tuple[Any, ...]:
    """The values of ``RAW_INSERT_COLUMNS`` for a new raw request."""
    return (
        request.request_id,
        request.device_id,
        request.seq,
        request.since,
        request.until,
        request.reason,
        request.state,
        request.created_by,
        request.created_at,
        request.expires_at,
    )


def raw_request_audit(request: RawRequestRecord) -> dict[str, Any]:
    """The detail of the ``raw_request.create`` audit event."""
    return {
        "device_id": request.device_id,
        "seq": request.seq,
        "since": request.since,
        "until": request.until,
        "reason": request.reason,
    }


def upload_values(upload: UploadRecord) -> tuple[Any, ...]:
    """The values of ``UPLOAD_COLUMNS`` for a completed upload."""
    return (
        upload.upload_id,
        upload.device_id,
        upload.length,
        upload.sha256,
        json.dumps(upload.metadata),
        upload.completed_at,
    )


def blob_values(upload: UploadRecord) -> tuple[Any, ...]:
    """The values of ``BLOB_COLUMNS`` for the blob a completed upload holds."""
    return (upload.sha256, upload.length, upload.device_id, upload.upload_id, upload.completed_at)


def upload_audit(upload: UploadRecord, *, delivered: bool) -> tuple[str, dict[str, Any]]:
    """The subject and detail of the ``upload.complete`` audit event (``delivered``:
    the raw request the upload names was moved to delivered by it)."""
    detail = {
        "upload_id": upload.upload_id,
        "length": upload.length,
        "stream": upload.metadata.get("stream"),
        "request_id": upload.metadata.get("request_id"),
        "raw_request_delivered": delivered,
    }
    return upload.sha256 or upload.upload_id, detail
