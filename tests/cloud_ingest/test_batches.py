"""PUT /v1/batches/{id}: validation, idempotency, and a lake that other tools can read."""

from __future__ import annotations

import asyncio
import io
import logging
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from unittest.mock import patch

import aiohttp
import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from cloud_ingest import middleware
from cloud_ingest.settings import IngestSettings
from sync.protocol import NO_OVERLAP_HEADER, Stream, make_batch_id
from sync.protocol.parquet import GENERIC_SCHEMA, encode_batch
from tests.support.ingest import (
    PARQUET,
    Ingest,
    bearer,
    event_records,
    events_batch,
    running_ingest,
)


def _lake_files(ingest: Ingest) -> list[Path]:
    return sorted(p for p in ingest.settings.lake_dir.rglob("*") if p.is_file())


async def _put(ingest: Ingest, token: str, batch_id: str, body: bytes, **headers: str):  # type: ignore[no-untyped-def]
    return await ingest.client.put(
        f"/v1/batches/{batch_id}", data=body, headers=bearer(token) | PARQUET | headers
    )


async def test_batch_is_stored_in_the_hive_lake_and_acked(ingest: Ingest) -> None:
    token = await ingest.device()
    batch_id, body = events_batch(first=1, last=10)
    response = await _put(ingest, token, batch_id, body)
    assert response.status == 201
    ack = await response.json()
    assert ack == {
        "batch_id": batch_id,
        "stream": "events",
        "records": 10,
        "duplicate": False,
        "acked": {"events": 10},
    }
    files = _lake_files(ingest)
    assert [p.relative_to(ingest.settings.lake_dir).as_posix() for p in files] == [
        f"events/site=yard-a/date=2025-11-24/{batch_id}.parquet"
    ]
    assert files[0].read_bytes() == body  # canonical bodies are stored as sent


async def test_same_id_same_digest_is_a_duplicate_stored_once(ingest: Ingest) -> None:
    token = await ingest.device()
    batch_id, body = events_batch()
    assert (await _put(ingest, token, batch_id, body)).status == 201
    stat = _lake_files(ingest)[0].stat()
    again = await _put(ingest, token, batch_id, body)
    assert again.status == 200
    assert (await again.json())["duplicate"] is True
    assert len(_lake_files(ingest)) == 1
    assert _lake_files(ingest)[0].stat().st_mtime_ns == stat.st_mtime_ns  # not rewritten


async def test_same_id_other_digest_is_409(ingest: Ingest) -> None:
    token = await ingest.device()
    batch_id, body = events_batch()
    _, other = events_batch(event_time=1_700_000_000.0)
    assert (await _put(ingest, token, batch_id, body)).status == 201
    conflict = await _put(ingest, token, batch_id, other)
    assert conflict.status == 409
    assert (await conflict.json())["error"] == "conflict"
    assert _lake_files(ingest)[0].read_bytes() == body


def _reencoded(body: bytes, *, drop: tuple[str, ...] = (), compression: str = "snappy") -> bytes:
    """The same rows in other bytes, as an upgraded device (another pyarrow, a column
    added since) would cut them again."""
    sink = io.BytesIO()
    pq.write_table(
        pq.read_table(io.BytesIO(body)).drop_columns(list(drop)), sink, compression=compression
    )
    assert sink.getvalue() != body
    return sink.getvalue()


@pytest.mark.parametrize(
    ("drop", "event_time"),
    [
        ((), 1_764_000_000.0),  # another compression
        (("frame_metadata",), 1_764_000_000.0),  # cut before the column was added
        ((), 1_764_028_795.0),  # spans midnight: held as two files
    ],
)
async def test_the_same_rows_in_other_bytes_are_a_duplicate(
    ingest: Ingest, drop: tuple[str, ...], event_time: float
) -> None:
    token = await ingest.device()
    batch_id, body = events_batch(event_time=event_time)
    assert (await _put(ingest, token, batch_id, body)).status == 201
    held = {p: p.read_bytes() for p in _lake_files(ingest)}
    again = await _put(ingest, token, batch_id, _reencoded(body, drop=drop))
    assert again.status == 200
    assert (await again.json())["duplicate"] is True
    assert {p: p.read_bytes() for p in _lake_files(ingest)} == held  # nothing rewritten


async def test_other_rows_or_a_lost_lake_file_under_a_held_id_stay_409(ingest: Ingest) -> None:
    token = await ingest.device()
    batch_id, body = events_batch()
    assert (await _put(ingest, token, batch_id, body)).status == 201
    table = pq.read_table(io.BytesIO(body))
    latency = pa.array([99.0] * table.num_rows, pa.float32())
    sink = io.BytesIO()
    pq.write_table(
        table.set_column(table.schema.get_field_index("latency_ms"), "latency_ms", latency), sink
    )
    assert (await _put(ingest, token, batch_id, sink.getvalue())).status == 409
    _lake_files(ingest)[0].unlink()  # retention, or an operator: nothing to compare with
    assert (await _put(ingest, token, batch_id, _reencoded(body))).status == 409


async def test_concurrent_puts_of_one_batch_store_it_once(ingest: Ingest) -> None:
    token = await ingest.device()
    batch_id, body = events_batch()
    answers = await asyncio.gather(*(_put(ingest, token, batch_id, body) for _ in range(8)))
    assert sorted(a.status for a in answers) == [200] * 7 + [201]
    assert len(_lake_files(ingest)) == 1


async def test_watermark_is_the_highest_stored_last_seq_per_stream(ingest: Ingest) -> None:
    token = await ingest.device()
    for first, last in [(1, 10), (21, 30), (11, 20)]:
        batch_id, body = events_batch(first=first, last=last)
        response = await _put(ingest, token, batch_id, body)
        assert response.status == 201
    assert (await response.json())["acked"] == {"events": 30}
    telemetry = encode_batch(
        Stream.TELEMETRY,
        [
            {
                "device_id": "gate-01",
                "site_id": "yard-a",
                "seq": 31,
                "event_time": 1.7e9,
                "kind": "cpu",
                "body": "{}",
            }
        ],
    )
    response = await _put(
        ingest, token, make_batch_id("gate-01", Stream.TELEMETRY, 31, 31), telemetry
    )
    assert (await response.json())["acked"] == {"events": 30, "telemetry": 31}


async def test_bad_bodies_are_400_with_the_reason(ingest: Ingest) -> None:
    token = await ingest.device()
    batch_id, _ = events_batch()
    not_parquet = await _put(ingest, token, batch_id, b"PAR1 certainly not parquet")
    assert not_parquet.status == 400
    assert "not a readable Parquet file" in (await not_parquet.json())["detail"]

    sink = io.BytesIO()
    pq.write_table(pa.table({"x": [1, 2]}), sink)
    wrong_schema = await _put(ingest, token, batch_id, sink.getvalue())
    assert wrong_schema.status == 400
    assert "lacks columns" in (await wrong_schema.json())["detail"]

    generic = encode_batch(
        Stream.CRITICAL,
        [{"device_id": "gate-01", "site_id": "yard-a", "seq": 1, "event_time": 1.7e9}],
    )
    assert GENERIC_SCHEMA.names != event_records("a", "b", range(1))  # generic lacks events cols
    mismatched = await _put(ingest, token, batch_id, generic)
    assert mismatched.status == 400

    empty = await _put(ingest, token, batch_id, b"")
    assert empty.status == 400
    assert _lake_files(ingest) == []


async def test_records_of_another_device_or_site_are_400(ingest: Ingest) -> None:
    token = await ingest.device()
    records = event_records("gate-01", "yard-a", range(1, 6))
    records[3]["device_id"] = "gate-02"
    batch_id = make_batch_id("gate-01", Stream.EVENTS, 1, 5)
    response = await _put(ingest, token, batch_id, encode_batch(Stream.EVENTS, records))
    assert response.status == 400
    assert "another device" in (await response.json())["detail"]

    records = event_records("gate-01", "yard-b", range(1, 6))
    response = await _put(ingest, token, batch_id, encode_batch(Stream.EVENTS, records))
    assert response.status == 400
    assert "another site" in (await response.json())["detail"]

    _, body = events_batch(first=1, last=9)
    outside = await _put(ingest, token, make_batch_id("gate-01", Stream.EVENTS, 2, 9), body)
    assert outside.status == 400
    assert "outside" in (await outside.json())["detail"]
    assert _lake_files(ingest) == []


async def test_bad_ids_types_and_sizes(ingest: Ingest) -> None:
    token = await ingest.device()
    _, body = events_batch()
    for bad_id in [
        "nope",
        "gate-01.events.9-1",
        "gate-01.raw_sampled.1-2",
        "..%2F..%2Fetc.events.1-2",
    ]:
        response = await _put(ingest, token, bad_id, body)
        assert response.status == 400, bad_id
    batch_id, body = events_batch()
    wrong_type = await _put(ingest, token, batch_id, body, **{"Content-Type": "text/csv"})
    assert wrong_type.status == 415


async def test_oversized_batch_is_413(tmp_path: Path) -> None:
    settings = IngestSettings(data_dir=tmp_path / "small", max_batch_bytes=2048)
    async with running_ingest(settings) as small:
        token = await small.device()
        batch_id, body = events_batch(first=1, last=400)
        assert len(body) > 2048

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 1000):
                yield body[start : start + 1000]

        for data in (body, chunks()):
            oversize = await small.client.put(
                f"/v1/batches/{batch_id}", data=data, headers=bearer(token) | PARQUET
            )
            assert oversize.status == 413
            assert (await oversize.json())["error"] == "payload_too_large"


async def test_batch_spanning_midnight_is_split_by_date(ingest: Ingest) -> None:
    token = await ingest.device()
    midnight = 1_764_028_800.0  # 2025-11-25T00:00:00Z
    batch_id, body = events_batch(first=1, last=4, event_time=midnight - 2)
    assert (await _put(ingest, token, batch_id, body)).status == 201
    names = [p.relative_to(ingest.settings.lake_dir).as_posix() for p in _lake_files(ingest)]
    assert names == [
        f"events/site=yard-a/date=2025-11-24/{batch_id}.parquet",
        f"events/site=yard-a/date=2025-11-25/{batch_id}.parquet",
    ]
    assert [pq.read_table(p).num_rows for p in _lake_files(ingest)] == [2, 2]


async def test_lake_reads_with_pyarrow_dataset_and_duckdb(ingest: Ingest) -> None:
    token_a = await ingest.device("gate-01", "yard-a")
    token_b = await ingest.device("gate-02", "yard-b")
    for token, device, site in [(token_a, "gate-01", "yard-a"), (token_b, "gate-02", "yard-b")]:
        for first in (1, 101):
            batch_id, body = events_batch(device, site, first=first, last=first + 49)
            assert (await _put(ingest, token, batch_id, body)).status == 201
    root = ingest.settings.lake_dir / "events"
    dataset = ds.dataset(root, format="parquet", partitioning="hive")
    table = dataset.to_table(filter=ds.field("site") == "yard-b")
    assert table.num_rows == 100
    assert set(table.column("device_id").to_pylist()) == {"gate-02"}
    rows = duckdb.sql(
        f"SELECT site, device_id, count(*) FROM read_parquet('{root}/*/*/*.parquet',"
        " hive_partitioning = true) GROUP BY ALL ORDER BY site"
    ).fetchall()
    assert rows == [("yard-a", "gate-01", 100), ("yard-b", "gate-02", 100)]


async def test_a_batch_from_before_frame_metadata_lands_with_the_column_null(
    ingest: Ingest,
) -> None:
    """Schema evolution: ``frame_metadata`` came after protocol 1 (``LATER_COLUMNS``)."""
    token = await ingest.device()
    old_id, body = events_batch(first=1, last=5)
    table = pq.read_table(io.BytesIO(body))
    old = table.drop_columns(["frame_metadata"])
    sink = io.BytesIO()
    pq.write_table(old, sink, compression="zstd")
    assert (await _put(ingest, token, old_id, sink.getvalue())).status == 201
    new_id, new_body = events_batch(first=6, last=7, frame_metadata='{"lane":2}')
    assert (await _put(ingest, token, new_id, new_body)).status == 201
    lake = ds.dataset(ingest.settings.lake_dir / "events", format="parquet", partitioning="hive")
    rows = lake.to_table(columns=["seq", "frame_metadata"]).sort_by("seq").to_pylist()
    assert [r["frame_metadata"] for r in rows] == [None] * 5 + ['{"lane":2}'] * 2

    sink = io.BytesIO()
    pq.write_table(table.drop_columns(["camera_id"]), sink)  # not a later column: refused
    refused = await _put(
        ingest, token, make_batch_id("gate-01", Stream.EVENTS, 8, 12), sink.getvalue()
    )
    assert refused.status == 400
    assert "lacks columns ['camera_id']" in (await refused.json())["detail"]


async def test_invalid_utf8_in_a_string_column_is_400(ingest: Ingest) -> None:
    """Found by the fuzzer: a damaged string column used to surface as a 500."""
    token = await ingest.device()
    _, body = events_batch(first=1, last=1)
    table = pq.read_table(io.BytesIO(body))
    offsets = pa.py_buffer(struct.pack("<2i", 0, 1))
    broken = pa.Array.from_buffers(pa.string(), 1, [None, offsets, pa.py_buffer(b"\x80")])
    table = table.set_column(
        table.schema.get_field_index("device_id"), table.schema.field("device_id"), broken
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    response = await _put(
        ingest, token, make_batch_id("gate-01", Stream.EVENTS, 1, 1), sink.getvalue()
    )
    assert response.status == 400
    assert set(await response.json()) == {"error", "detail"}
    assert _lake_files(ingest) == []


async def test_no_overlap_header_refuses_seqs_held_under_another_id(ingest: Ingest) -> None:
    """412 before anything is written; the same id stays a duplicate; no header: stored."""
    token = await ingest.device()
    no_overlap = {NO_OVERLAP_HEADER: "1"}
    batch_id, body = events_batch(first=1, last=10)
    assert (await _put(ingest, token, batch_id, body, **no_overlap)).status == 201
    assert (await _put(ingest, token, batch_id, body, **no_overlap)).status == 200
    files = _lake_files(ingest)
    other_id, other = events_batch(first=5, last=20)
    refused = await _put(ingest, token, other_id, other, **no_overlap)
    assert refused.status == 412
    assert batch_id in (await refused.json())["detail"]
    assert _lake_files(ingest) == files
    next_id, after = events_batch(first=11, last=20)
    assert (await _put(ingest, token, next_id, after, **no_overlap)).status == 201
    assert (await _put(ingest, token, other_id, other)).status == 201  # no header: as before


async def test_no_overlap_header_with_another_value_is_400_and_stores_nothing(
    ingest: Ingest,
) -> None:
    token = await ingest.device()
    batch_id, body = events_batch(first=1, last=10)
    for value in ["0", "yes", ""]:
        response = await _put(ingest, token, batch_id, body, **{NO_OVERLAP_HEADER: value})
        assert response.status == 400, value
        assert NO_OVERLAP_HEADER in (await response.json())["detail"]
    assert _lake_files(ingest) == []


async def test_a_put_cut_mid_body_logs_one_line_and_stores_nothing(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    """A device that gives up on a PUT mid-body (its link dropped, the engine cancelled
    the send) is routine: one info line, no error-level traceback, nothing stored."""
    caplog.set_level(logging.INFO)
    token = await ingest.device()
    batch_id, body = events_batch(first=1, last=10)
    half_sent = asyncio.Event()

    async def half_then_stall() -> AsyncIterator[bytes]:
        yield body[: len(body) // 2]
        half_sent.set()
        await asyncio.Event().wait()  # the rest never comes

    headers = bearer(token) | PARQUET | {"Content-Length": str(len(body))}
    async with aiohttp.ClientSession() as http:
        put = asyncio.create_task(
            http.put(
                ingest.client.make_url(f"/v1/batches/{batch_id}"),
                data=half_then_stall(),
                headers=headers,
            )
        )
        await half_sent.wait()
        await asyncio.sleep(0.2)  # the handler is reading the body
        put.cancel()
        await asyncio.gather(put, return_exceptions=True)
    await asyncio.sleep(0.2)  # the server has seen the connection go
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert _lake_files(ingest) == []
    again = await _put(ingest, token, batch_id, body)  # the device sends it again, whole
    assert again.status == 201
    assert len(_lake_files(ingest)) == 1


async def test_client_gone_mid_request_is_one_info_line() -> None:
    """When the cut surfaces as ConnectionResetError (the connection was lost while the
    handler was not reading), the middleware answers 499 for the logs, no traceback."""

    async def handler(request: web.Request) -> web.StreamResponse:
        raise ConnectionResetError("Connection lost")

    request = make_mocked_request("PUT", "/v1/batches/gate-01.events.1-10")
    with (
        patch.object(middleware.log, "info") as info,
        patch.object(middleware.log, "exception") as exception,
    ):
        response = await middleware.error_middleware(request, handler)
    assert response.status == 499
    info.assert_called_once()
    assert "client went away" in info.call_args.args[0]
    exception.assert_not_called()
