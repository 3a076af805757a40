"""The one-pass batch reader keeps what the full decode took: extra columns dropped,
any row-group layout, an empty body refused; and its shortcuts (a one-entry
dictionary read instead of every row, a loose size bound before an exact count)
still refuse what they must."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cloud_ingest.batch_validation import validate_batch
from cloud_ingest.errors import BatchTooLargeDecoded
from cloud_ingest.lake import write_batch
from sync.protocol import parse_batch_id
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


# The shortcuts of the reader: each keeps refusing what it must.


def _with_dictionary_column(
    table: pa.Table, name: str, values: list[str], rows: list[int]
) -> bytes:
    """``table`` with column ``name`` written as a dictionary of ``values`` (unused ones
    included) indexed by ``rows``."""
    column = pa.DictionaryArray.from_arrays(pa.array(rows, pa.int32()), pa.array(values))
    index = table.schema.get_field_index(name)
    return _body(table.set_column(index, pa.field(name, column.type, nullable=False), column))


async def test_a_device_column_naming_only_another_device_is_400(ingest: Ingest) -> None:
    """The device check reads a one-entry dictionary instead of every row: an entry
    that is not the sender is still refused."""
    token = await ingest.device()
    body = _with_dictionary_column(_events(1, 5), "device_id", ["gate-02"], [0] * 5)
    response = await _put(ingest, token, "gate-01.events.1-5", body)
    assert response.status == 400
    assert "another device" in (await response.json())["detail"]
    assert not list(ingest.settings.lake_dir.rglob("*.parquet"))


async def test_a_device_dictionary_with_other_entries_is_checked_row_by_row(
    ingest: Ingest,
) -> None:
    token = await ingest.device()
    unused = _with_dictionary_column(_events(1, 5), "device_id", ["gate-02", "gate-01"], [1] * 5)
    response = await _put(ingest, token, "gate-01.events.1-5", unused)
    assert response.status == 201, await response.text()  # gate-02 names no row

    used = _with_dictionary_column(
        _events(6, 10), "device_id", ["gate-01", "gate-02"], [0, 0, 1, 0, 0]
    )
    response = await _put(ingest, token, "gate-01.events.6-10", used)
    assert response.status == 400
    assert "gate-02" in (await response.json())["detail"]


def test_a_bound_past_the_limit_falls_back_to_an_exact_count() -> None:
    """A dictionary column is first bounded as if every row held its longest value;
    past the limit the rows are counted exactly: a body within the limit is taken,
    one beyond it is still 413."""

    def body(long_rows: int) -> bytes:
        rows = 1000
        table = _events(1, rows)
        indices = [0 if i < long_rows else 1 for i in range(rows)]
        column = pa.DictionaryArray.from_arrays(
            pa.array(indices, pa.int32()), pa.array(["x" * (1 << 20), "{}"])
        )
        index = table.schema.get_field_index("frame_metadata")
        return _body(table.set_column(index, pa.field("frame_metadata", column.type), column))

    parts = parse_batch_id("gate-01.events.1-1000")
    # the bound says 1000 x 1 MiB; one row holds the long value: about 1 MiB
    taken = validate_batch(parts, "yard-a", body(1), max_decoded_bytes=16 << 20)
    assert taken.table.num_rows == 1000
    with pytest.raises(BatchTooLargeDecoded) as refused:  # 20 rows hold it: 20 MiB
        validate_batch(parts, "yard-a", body(20), max_decoded_bytes=16 << 20)
    assert refused.value.status == 413


@pytest.mark.parametrize(
    ("event_times_us", "dates"),
    [
        ([1_764_028_800_000_000 - 2, 1_764_028_800_000_000 - 1], ["2025-11-24"]),
        ([1_764_028_800_000_000 - 1, 1_764_028_800_000_000], ["2025-11-24", "2025-11-25"]),
        ([-62_135_596_800_000_000, -62_135_596_799_999_999], ["0001-01-01"]),
    ],
)
def test_the_event_time_range_from_validation_names_the_lake_dates(
    tmp_path: Path, event_times_us: list[int], dates: list[str]
) -> None:
    """The lake takes a batch's dates from the range validation found (no second pass
    over the times) and still splits a batch at midnight UTC."""
    table = _events(1, 2).set_column(
        3,
        EVENTS_SCHEMA.field("event_time"),
        pa.array(event_times_us, pa.timestamp("us", tz="UTC")),
    )
    parts = parse_batch_id("gate-01.events.1-2")
    valid = validate_batch(parts, "yard-a", _body(table))
    assert valid.event_time_range_us == (event_times_us[0], event_times_us[-1])
    paths = write_batch(
        tmp_path / "lake",
        stream=parts.stream,
        site_id="yard-a",
        batch_id="gate-01.events.1-2",
        table=valid.table,
        body=_body(table),
        body_is_canonical=valid.body_is_canonical,
        event_time_range_us=valid.event_time_range_us,
    )
    assert [p.split("/")[2] for p in paths] == [f"date={d}" for d in dates]
