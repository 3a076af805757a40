"""The SQL both backends share (``catalog_queries.py``, ``models/store_rows.py``):
one neutral text, each dialect's placeholders, and as many values as
placeholders.  What the queries answer is checked on both backends by
``test_catalog.py`` and the model store tests."""

from __future__ import annotations

from typing import Any

import pytest

from cloud_ingest import catalog_queries
from cloud_ingest.catalog import UploadRecord
from cloud_ingest.models import store_rows
from cloud_ingest.models.store_rows import DeviceOutcome, ReleaseRecord
from cloud_ingest.sql_dialects import INSERTION_ORDER, Dialect, Read, render
from sync.protocol import Stream

STREAM = next(iter(Stream))
UPLOAD_FOR_REQUEST = UploadRecord("u", "d", 1, None, 1.0, {"request_id": "r"})
RELEASE = ReleaseRecord("m", "1", 1, "00" * 32, 1, "k", b"{}", "op", 1.0)


def test_an_upload_naming_no_raw_request_delivers_none() -> None:
    assert catalog_queries.deliver_raw_request(UploadRecord("u", "d", 1, None, 1.0)) is None
    assert catalog_queries.deliver_raw_request(UPLOAD_FOR_REQUEST) is not None


def _statements() -> list[tuple[str, tuple[Any, ...]]]:
    reads: list[Read[Any]] = [
        catalog_queries.principal_for_token("h"),
        catalog_queries.device("d"),
        catalog_queries.devices(),
        catalog_queries.batch("b"),
        catalog_queries.overlapping_batch("d", STREAM, 1, 2),
        catalog_queries.held_ranges("d", STREAM, 0, 10),
        catalog_queries.watermarks("d"),
        catalog_queries.raw_request("r"),
        catalog_queries.list_raw_requests(device_id=None, state=None, limit=5),
        catalog_queries.list_raw_requests(device_id="d", state="requested", limit=5),
        catalog_queries.pending_raw_requests("d", 1.0),
        catalog_queries.has_blob("s"),
        catalog_queries.device_uploaded_blob("d", "s"),
        catalog_queries.list_audit(after_id=0, limit=5),
        store_rows.release_read("m", "1"),
        store_rows.releases_read(),
        store_rows.highest_counter_read("m"),
        store_rows.rollout_read("m", "1"),
        store_rows.rollouts_read(),
        store_rows.outcomes_read("m", "1"),
        store_rows.device_outcomes_read("d"),
    ]
    delivery = catalog_queries.deliver_raw_request(UPLOAD_FOR_REQUEST)
    assert delivery is not None
    return [
        *((read.sql, read.params) for read in reads),
        catalog_queries.revoked_at("device", "d"),
        *catalog_queries.revoke("operator", "o", 1.0),
        catalog_queries.record_sync("d", {"ok": True}, 1.0),
        catalog_queries.move_raw_request("d", "r", "delivered", 1.0, None),
        catalog_queries.expire_raw_requests(1.0),
        delivery,
        store_rows.held_manifest(RELEASE),
        store_rows.active_rollout("m"),
        store_rows.held_outcome(DeviceOutcome("d", "m", "1", 1, "ok", None, None)),
    ]


@pytest.mark.parametrize(("sql", "params"), _statements())
def test_each_statement_has_a_value_per_placeholder(sql: str, params: tuple[Any, ...]) -> None:
    assert sql.count("?") == len(params)
    assert "$" not in sql  # neutral text; PostgreSQL's numbers come from render


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [
        ("sqlite", "SELECT a FROM t WHERE x = ? AND y > ? ORDER BY created_at, rowid LIMIT ?"),
        (
            "postgres",
            "SELECT a FROM t WHERE x = $1 AND y > $2 ORDER BY created_at, created_order LIMIT $3",
        ),
    ],
)
def test_render_numbers_placeholders_and_names_insertion_order(
    dialect: Dialect, expected: str
) -> None:
    neutral = (
        f"SELECT a FROM t WHERE x = ? AND y > ? ORDER BY created_at, {INSERTION_ORDER} LIMIT ?"
    )
    assert render(neutral, dialect) == expected
