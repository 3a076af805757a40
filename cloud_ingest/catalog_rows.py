"""Rows of the catalog as either backend returns them: the SELECT lists and the
row-to-record mapping, shared by SQLite (``catalog_sqlite.py``) and PostgreSQL
(``catalog_postgres.py``) so that both answer with the same records."""

from __future__ import annotations

import json
from typing import Any, Protocol

from cloud_ingest.catalog import BatchRecord, DeviceRecord, RawRequestRecord
from sync.protocol import Stream

__all__ = [
    "BATCH_SELECT",
    "DEVICE_SELECT",
    "RAW_SELECT",
    "Row",
    "batch_row",
    "device_row",
    "raw_row",
]


class Row(Protocol):
    """An aiosqlite row or an asyncpg record: fields by position."""

    def __getitem__(self, index: int, /) -> Any: ...
    def __len__(self) -> int: ...


DEVICE_SELECT = (
    "SELECT device_id, site_id, created_at, revoked_at, last_sync_at, last_sync FROM devices"
)
BATCH_SELECT = (
    "SELECT batch_id, device_id, site_id, stream, first_seq, last_seq, records, sha256, size,"
    " lake_paths, received_at FROM batches"
)
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
