"""Bad input a hostile device can send: each a clear 4xx, nothing left in the lake.

The cases of issue 22 (items 1-5): batch ids out of range or not canonical,
event times out of range or null, huge integers in the handshake, broken gzip
bodies, and a small body that decodes to gigabytes.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sync.protocol.parquet import EVENTS_SCHEMA, GENERIC_SCHEMA
from tests.support.ingest import PARQUET, Ingest, bearer, event_records, events_batch


def _lake_files(ingest: Ingest) -> list[Path]:
    return sorted(p for p in ingest.settings.lake_dir.rglob("*") if p.is_file())


def _critical_body(device_id: str, site_id: str, seq: int, event_time_us: int | None) -> bytes:
    table = pa.table(
        {
            "device_id": [device_id],
            "site_id": [site_id],
            "seq": pa.array([seq], pa.int64()),
            "event_time": pa.array([event_time_us], pa.timestamp("us", tz="UTC")),
            "model_name": [None],
            "model_version": [None],
            "kind": ["alarm"],
            "body": ["{}"],
        },
        schema=GENERIC_SCHEMA.set(
            3, pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=True)
        ),
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


@pytest.mark.parametrize(
    ("batch_id", "why"),
    [
        ("gate-01.critical.0-99999999999999999999", "out of range"),
        ("gate-01.critical.9223372036854775808-9223372036854775808", "out of range"),
        ("gate-01.critical.01-1", "canonical"),
        ("gate-01.events.0400-401", "canonical"),
    ],
)
async def test_batch_ids_out_of_range_or_not_canonical_are_400(
    ingest: Ingest, batch_id: str, why: str
) -> None:
    token = await ingest.device()
    body = _critical_body("gate-01", "yard-a", 1, 1_764_000_000_000_000)
    response = await ingest.client.put(
        f"/v1/batches/{batch_id}", data=body, headers=bearer(token) | PARQUET
    )
    assert response.status == 400, await response.text()
    answer = await response.json()
    assert answer["error"] == "bad_batch_id"
    assert why in answer["detail"]
    assert _lake_files(ingest) == []


async def test_a_zero_padded_copy_of_a_held_id_is_refused(ingest: Ingest) -> None:
    token = await ingest.device()
    batch_id, body = events_batch(first=400, last=401)
    assert (
        await ingest.client.put(f"/v1/batches/{batch_id}", data=body, headers=bearer(token))
    ).status == 201
    padded = "gate-01.events.0400-401"
    response = await ingest.client.put(f"/v1/batches/{padded}", data=body, headers=bearer(token))
    assert response.status == 400
    assert len(_lake_files(ingest)) == 1  # one file for the records, not two


@pytest.mark.parametrize("event_time_us", [-(2**62), 2**62, None])
async def test_event_time_out_of_range_or_null_is_400(
    ingest: Ingest, event_time_us: int | None
) -> None:
    token = await ingest.device()
    body = _critical_body("gate-01", "yard-a", 1, event_time_us)
    response = await ingest.client.put(
        "/v1/batches/gate-01.critical.1-1", data=body, headers=bearer(token) | PARQUET
    )
    assert response.status == 400, await response.text()
    assert "event_time" in (await response.json())["detail"]
    assert _lake_files(ingest) == []


@pytest.mark.parametrize(
    "change",
    [
        {"watermarks": {"events": 10**30}},
        {"watermarks": {"events": -1}},
        {"outbox": {"events": {"records": 10**30, "bytes": 0}}},
        {"link": {"failures": 10**30}},
    ],
)
async def test_handshake_integers_out_of_range_are_400(
    ingest: Ingest, change: dict[str, object]
) -> None:
    token = await ingest.device()
    body = {"device_id": "gate-01", "site_id": "yard-a", "want_held": True} | change
    response = await ingest.client.post("/v1/sync", json=body, headers=bearer(token))
    assert response.status == 400, await response.text()
    answer = await response.json()
    assert answer["error"] == "bad_request"
    assert "less than or equal" in answer["detail"] or "greater than" in answer["detail"]


async def test_a_column_path_that_is_not_utf8_is_answered_without_a_500(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by the fuzz test: pyarrow reads the table, then fails to spell a
    column path of the Parquet schema (byte 0x80) when the schema is read alone."""
    token = await ingest.device()
    body = (Path(__file__).parent / "data" / "parquet_column_path_not_utf8.bin").read_bytes()
    with caplog.at_level(logging.INFO):
        response = await ingest.client.put(
            "/v1/batches/gate-01.events.0-10", data=body, headers=bearer(token) | PARQUET
        )
    assert response.status in (201, 400), await response.text()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_bad_gzip_on_a_batch_put_is_400_without_a_traceback(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    token = await ingest.device()
    batch_id, body = events_batch()
    headers = bearer(token) | PARQUET | {"Content-Encoding": "gzip"}
    with caplog.at_level(logging.INFO):
        response = await ingest.client.put(f"/v1/batches/{batch_id}", data=b"abcd", headers=headers)
    assert response.status == 400, await response.text()
    assert (await response.json())["error"] == "bad_content_encoding"
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    good = await ingest.client.put(
        f"/v1/batches/{batch_id}", data=gzip.compress(body), headers=headers
    )
    assert good.status == 201  # a correct gzip body is still taken
    assert _lake_files(ingest) and all(not p.name.startswith(".") for p in _lake_files(ingest))


async def test_bad_gzip_on_a_tus_patch_is_400_and_keeps_the_offset(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    token = await ingest.device()
    tus = {"Tus-Resumable": "1.0.0"}
    created = await ingest.client.post(
        "/v1/uploads/", headers=bearer(token) | tus | {"Upload-Length": "100"}
    )
    assert created.status == 201
    url = created.headers["Location"]
    patch = (
        bearer(token)
        | tus
        | {
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
            "Content-Encoding": "gzip",
        }
    )
    with caplog.at_level(logging.INFO):
        response = await ingest.client.patch(url, data=b"abcd", headers=patch)
    assert response.status == 400, await response.text()
    assert (await response.json())["error"] == "bad_content_encoding"
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    head = await ingest.client.head(url, headers=bearer(token) | tus)
    assert head.headers["Upload-Offset"] == "0"


def _bomb(rows: int, value_bytes: int, *, arrow_schema: bool = True) -> bytes:
    """``rows`` records sharing one ``value_bytes`` string: tiny once dictionary- and
    zstd-encoded, ``rows * value_bytes`` once read."""
    records = event_records("gate-01", "yard-a", range(1, rows + 1))
    table = pa.Table.from_pylist(records, schema=EVENTS_SCHEMA)
    big = pa.DictionaryArray.from_arrays(
        pa.array([0] * rows, pa.int32()), pa.array(["x" * value_bytes], pa.string())
    )  # written as a dictionary page plus indices, never materialised here
    column = table.schema.get_field_index("frame_metadata")
    table = table.set_column(column, pa.field("frame_metadata", big.type), big)
    sink = io.BytesIO()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        compression_level=19,
        dictionary_pagesize_limit=1 << 30,
        store_schema=arrow_schema,  # without: read back as a plain string column
    )
    return sink.getvalue()


@pytest.mark.parametrize("arrow_schema", [True, False])
async def test_a_small_batch_that_decodes_to_gigabytes_is_413(
    ingest: Ingest, arrow_schema: bool
) -> None:
    token = await ingest.device()
    body = _bomb(800, 1 << 20, arrow_schema=arrow_schema)
    assert len(body) < 100_000
    response = await ingest.client.put(
        "/v1/batches/gate-01.events.1-800", data=body, headers=bearer(token) | PARQUET
    )
    assert response.status == 413, await response.text()
    answer = await response.json()
    assert answer["error"] == "batch_too_large_decoded"
    assert _lake_files(ingest) == []


async def test_a_batch_within_the_decoded_bound_is_taken(ingest: Ingest) -> None:
    token = await ingest.device()
    body = _bomb(20, 1 << 16)
    response = await ingest.client.put(
        "/v1/batches/gate-01.events.1-20", data=body, headers=bearer(token) | PARQUET
    )
    assert response.status == 201, await response.text()


async def test_the_largest_seq_is_taken(ingest: Ingest) -> None:
    token = await ingest.device()
    body = _critical_body("gate-01", "yard-a", 2**63 - 1, 1_764_000_000_000_000)
    response = await ingest.client.put(
        f"/v1/batches/gate-01.critical.{2**63 - 1}-{2**63 - 1}",
        data=body,
        headers=bearer(token) | PARQUET,
    )
    assert response.status == 201, await response.text()  # the largest seq is fine
    assert json.loads(await response.text())["acked"] == {"critical": 2**63 - 1}
