"""The one-pass batch reader keeps what the full decode took: extra columns dropped,
any row-group layout, an empty body refused."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from sync.protocol.parquet import EVENTS_SCHEMA
from tests.support.ingest import PARQUET, Ingest, bearer, event_records


def _body(table: pa.Table, **options: int) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", **options)
    return sink.getvalue()


def _events(first: int, last: int) -> pa.Table:
    records = event_records("gate-01", "yard-a", range(first, last + 1))
    return pa.Table.from_pylist(records, schema=EVENTS_SCHEMA)


async def _put(ingest: Ingest, token: str, batch_id: str, body: bytes):  # type: ignore[no-untyped-def]
    return await ingest.client.put(
        f"/v1/batches/{batch_id}", data=body, headers=bearer(token) | PARQUET
    )


def _stored(ingest: Ingest, batch_id: str) -> pa.Table:
    (path,) = ingest.settings.lake_dir.rglob(f"{batch_id}.parquet")
    return pq.read_table(path)


async def test_a_column_outside_the_schema_is_dropped_and_the_rest_stored(
    ingest: Ingest,
) -> None:
    token = await ingest.device()
    table = _events(1, 5)
    body = _body(table.append_column("extra", pa.array(range(5), pa.int64())))
    response = await _put(ingest, token, "gate-01.events.1-5", body)
    assert response.status == 201, await response.text()
    stored = _stored(ingest, "gate-01.events.1-5")
    assert stored.schema.names == EVENTS_SCHEMA.names
    assert stored.column("seq").to_pylist() == [1, 2, 3, 4, 5]


async def test_a_body_of_many_row_groups_is_read_whole(ingest: Ingest) -> None:
    token = await ingest.device()
    response = await _put(
        ingest, token, "gate-01.events.1-50", _body(_events(1, 50), row_group_size=7)
    )
    assert response.status == 201, await response.text()
    assert (await response.json())["records"] == 50
    assert _stored(ingest, "gate-01.events.1-50").column("seq").to_pylist() == list(range(1, 51))


async def test_a_body_without_records_is_400(ingest: Ingest) -> None:
    token = await ingest.device()
    response = await _put(ingest, token, "gate-01.events.1-5", _body(_events(1, 5).slice(0, 0)))
    assert response.status == 400
    assert "no records" in (await response.json())["detail"]
    assert not list(ingest.settings.lake_dir.rglob("*.parquet"))
