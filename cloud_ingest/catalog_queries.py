"""The catalog's reads, written once for both backends: each builder returns a
``Read`` of ``sql_dialects.py`` (the SQL with ``?`` placeholders, its values,
and how its rows become the answer), and each backend renders the SQL in its
own dialect and runs it.  Writes both dialects state alike (revoking a
principal, moving a raw request's state) are a ``Statement`` here too; the rest
stay in ``catalog_sqlite.py`` and ``catalog_postgres.py``, where the dialects
really differ (``ON CONFLICT`` or a pre-check, transactions, how a changed-row
count is read).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from cloud_ingest.catalog import (
    AuditEvent,
    BatchRecord,
    DeviceRecord,
    RawRequestRecord,
    RawRequestState,
    UploadRecord,
)
from cloud_ingest.catalog_rows import (
    BATCH_SELECT,
    DEVICE_SELECT,
    RAW_SELECT,
    Row,
    batch_row,
    device_row,
    raw_row,
)
from cloud_ingest.principal import Principal
from cloud_ingest.sql_dialects import INSERTION_ORDER, Read, Statement, first
from sync.protocol import Stream

__all__ = [
    "PrincipalRole",
    "batch",
    "device",
    "device_uploaded_blob",
    "deliver_raw_request",
    "devices",
    "expire_raw_requests",
    "has_blob",
    "held_ranges",
    "list_audit",
    "list_raw_requests",
    "move_raw_request",
    "overlapping_batch",
    "pending_raw_requests",
    "principal_for_token",
    "raw_request",
    "record_sync",
    "revoke",
    "revoked_at",
    "watermarks",
]

PrincipalRole = Literal["device", "operator"]


def _exists(rows: Sequence[Row]) -> bool:
    return bool(rows)


# ------------------------------------------------------------- devices, credentials


def _principal(row: Row) -> Principal:
    role, subject, site_id = row[0], row[1], row[2]
    if role == "device":
        return Principal("device", subject, device_id=subject, site_id=site_id)
    return Principal("operator", subject)


def principal_for_token(token_hash: str) -> Read[Principal | None]:
    return Read(
        "SELECT c.role, c.subject, d.site_id FROM credentials c"
        " LEFT JOIN devices d ON c.role = 'device' AND d.device_id = c.subject"
        " WHERE c.token_hash = ? AND c.revoked_at IS NULL AND d.revoked_at IS NULL",
        (token_hash,),
        first(_principal),
    )


# the table of each kind of principal and the column that names one
_PRINCIPAL_TABLES: dict[PrincipalRole, tuple[str, str]] = {
    "device": ("devices", "device_id"),
    "operator": ("operators", "name"),
}


def revoked_at(role: PrincipalRole, subject: str) -> Statement:
    """The lookup of a principal's ``revoked_at`` (no row: there is no such principal)."""
    table, key = _PRINCIPAL_TABLES[role]
    return f"SELECT revoked_at FROM {table} WHERE {key} = ?", (subject,)


def revoke(role: PrincipalRole, subject: str, now: float) -> list[Statement]:
    """Revoke a principal and its credentials; a revoked one keeps its first time."""
    table, key = _PRINCIPAL_TABLES[role]
    return [
        (
            f"UPDATE {table} SET revoked_at = COALESCE(revoked_at, ?) WHERE {key} = ?",
            (now, subject),
        ),
        (
            "UPDATE credentials SET revoked_at = COALESCE(revoked_at, ?)"
            " WHERE role = ? AND subject = ?",
            (now, role, subject),
        ),
    ]


def device(device_id: str) -> Read[DeviceRecord | None]:
    return Read(DEVICE_SELECT + " WHERE device_id = ?", (device_id,), first(device_row))


def devices() -> Read[list[DeviceRecord]]:
    return Read(DEVICE_SELECT + " ORDER BY device_id", (), lambda rows: list(map(device_row, rows)))


def record_sync(device_id: str, status: dict[str, Any], now: float) -> Statement:
    return (
        "UPDATE devices SET last_sync_at = ?, last_sync = ? WHERE device_id = ?",
        (now, json.dumps(status), device_id),
    )


# ------------------------------------------------------------- batches, watermarks


def batch(batch_id: str) -> Read[BatchRecord | None]:
    return Read(BATCH_SELECT + " WHERE batch_id = ?", (batch_id,), first(batch_row))


def overlapping_batch(
    device_id: str, stream: Stream, first_seq: int, last_seq: int
) -> Read[str | None]:
    return Read(
        "SELECT batch_id FROM batches WHERE device_id = ? AND stream = ?"
        " AND last_seq >= ? AND first_seq <= ? LIMIT 1",
        (device_id, stream.value, first_seq, last_seq),
        first(lambda row: str(row[0])),
    )


def held_ranges(
    device_id: str, stream: Stream, above: int, limit: int
) -> Read[list[tuple[int, int]]]:
    return Read(
        "SELECT first_seq, last_seq FROM batches WHERE device_id = ? AND stream = ?"
        " AND last_seq > ? ORDER BY last_seq LIMIT ?",  # index batches_device_stream
        (device_id, stream.value, above, limit),
        lambda rows: [(int(row[0]), int(row[1])) for row in rows],
    )


def watermarks(device_id: str) -> Read[dict[Stream, int]]:
    return Read(
        "SELECT stream, acked_seq FROM watermarks WHERE device_id = ?",
        (device_id,),
        lambda rows: {Stream(row[0]): int(row[1]) for row in rows},
    )


# ------------------------------------------------------------- raw requests


def _raw_requests(rows: Sequence[Row]) -> list[RawRequestRecord]:
    return [raw_row(row) for row in rows]


def move_raw_request(
    device_id: str, request_id: str, state: RawRequestState, now: float, upload_id: str | None
) -> Statement:
    """Move one of the device's *requested* raw requests to ``state`` (1 row if it moved)."""
    return (
        "UPDATE raw_requests SET state = ?, state_changed_at = ?,"
        " upload_id = COALESCE(?, upload_id)"
        " WHERE request_id = ? AND device_id = ? AND state = 'requested'",
        (state, now, upload_id, request_id, device_id),
    )


def deliver_raw_request(upload: UploadRecord) -> Statement | None:
    """Move the raw request a completed upload names (if any) to delivered."""
    request_id = upload.metadata.get("request_id")
    if not request_id:
        return None
    return move_raw_request(
        upload.device_id, request_id, "delivered", upload.completed_at, upload.upload_id
    )


def expire_raw_requests(now: float) -> Statement:
    return (
        "UPDATE raw_requests SET state = 'expired', state_changed_at = ?"
        " WHERE state = 'requested' AND expires_at <= ?",
        (now, now),
    )


def raw_request(request_id: str) -> Read[RawRequestRecord | None]:
    return Read(RAW_SELECT + " WHERE request_id = ?", (request_id,), first(raw_row))


def list_raw_requests(
    *, device_id: str | None, state: RawRequestState | None, limit: int
) -> Read[list[RawRequestRecord]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("device_id", device_id), ("state", state)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    return Read(
        RAW_SELECT + where + f" ORDER BY created_at, {INSERTION_ORDER} LIMIT ?",
        (*params, limit),
        _raw_requests,
    )


def pending_raw_requests(device_id: str, now: float) -> Read[list[RawRequestRecord]]:
    return Read(
        RAW_SELECT + " WHERE device_id = ? AND state = 'requested' AND expires_at > ?"
        f" ORDER BY created_at, {INSERTION_ORDER} LIMIT 1000",
        (device_id, now),
        _raw_requests,
    )


# ------------------------------------------------------------- blobs, audit


def has_blob(sha256: str) -> Read[bool]:
    return Read("SELECT 1 FROM blobs WHERE sha256 = ?", (sha256,), _exists)


def device_uploaded_blob(device_id: str, sha256: str) -> Read[bool]:
    return Read(
        "SELECT 1 FROM uploads WHERE device_id = ? AND sha256 = ? LIMIT 1",
        (device_id, sha256),
        _exists,
    )


def list_audit(*, after_id: int, limit: int) -> Read[list[AuditEvent]]:
    return Read(
        "SELECT event_id, at, actor, action, subject, detail FROM audit_log"
        " WHERE event_id > ? ORDER BY event_id LIMIT ?",
        (after_id, limit),
        lambda rows: [AuditEvent(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows],
    )
