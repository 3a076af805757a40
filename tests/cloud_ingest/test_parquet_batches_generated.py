"""Hypothesis-built Parquet batches against ``PUT /v1/batches``.

Types (right, wrong, missing, extra columns), nulls anywhere, extreme values
(seqs at the int64 edges, event times far outside any date), every codec, and
compression bombs within the body limit (one large string shared by thousands
of rows: kilobytes on the wire, gigabytes once read).  Whatever arrives: never
a 5xx, never a lake file without its catalog row, and the process's memory
(sampled while the requests run, server included) stays within a bound.
"""

from __future__ import annotations

import io
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_ingest.app_keys import CATALOG
from cloud_ingest.lake import is_temp_file
from cloud_ingest.settings import IngestSettings
from sync.protocol.parquet import EVENTS_SCHEMA, GENERIC_SCHEMA
from tests.support.ingest import PARQUET, Ingest, bearer, running_ingest

# a failing example holds megabytes of Parquet: its repr is large, which is expected here
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

DEVICE, SITE = "gate-01", "yard-a"
DECODED_LIMIT = 32 << 20  # the service's max_decoded_batch_bytes in this test
MEMORY_BOUND = 512 << 20  # peak RSS growth allowed over the whole run (bombs reach GBs)
INT64 = (-(2**63), 2**63 - 1)

seqs = st.integers(0, 2**20) | st.sampled_from([0, 1, 2**62, 2**63 - 2, 2**63 - 1])
event_times = st.integers(1_700_000_000_000_000, 1_800_000_000_000_000) | st.sampled_from(
    [INT64[0], INT64[1], -(2**62), 2**62, 0, 253_402_300_799_999_999, -62_135_596_800_000_000]
)
short_text = st.text(max_size=12) | st.sampled_from([DEVICE, SITE, "gate-02", "yard-b", ""])
floats32 = st.floats(width=32, allow_nan=True, allow_infinity=True)


def _nullable(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | values | values | values


result_rows = st.lists(
    st.fixed_dictionaries(
        {
            "kind": _nullable(short_text),
            "value": _nullable(short_text),
            "confidence": _nullable(floats32),
            "valid": _nullable(st.booleans()),
            "box": _nullable(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=5)),
        }
    ),
    max_size=3,
)
COLUMN_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "device_id": st.sampled_from([DEVICE] * 6 + [None, "gate-02"]),
    "site_id": st.sampled_from([SITE] * 6 + [None, "yard-b"]),
    "seq": _nullable(seqs),
    "event_time": _nullable(event_times),
    "model_name": _nullable(short_text),
    "model_version": _nullable(short_text),
    "camera_id": _nullable(short_text),
    "task": _nullable(short_text),
    "latency_ms": _nullable(floats32),
    "sla_violated": _nullable(st.booleans()),
    "results": _nullable(result_rows),
    "raw_sha256": _nullable(short_text),
    "frame_metadata": _nullable(st.text(max_size=40)),
    "kind": _nullable(short_text),
    "body": _nullable(st.text(max_size=40)),
}
WRONG_TYPES = [pa.string(), pa.int32(), pa.float64(), pa.binary(), pa.bool_()]


@st.composite
def batches(draw: st.DrawFn) -> tuple[str, bytes]:
    """A batch id and a Parquet body: mostly plausible, often wrong in one way."""
    stream, schema = draw(
        st.sampled_from([("events", EVENTS_SCHEMA), ("critical", GENERIC_SCHEMA)])
    )
    rows = draw(st.integers(1, 6))
    columns: dict[str, pa.Array] = {}
    for field in schema:
        values = [draw(COLUMN_VALUES[field.name]) for _ in range(rows)]
        columns[field.name] = pa.array(values, field.type)
    table = pa.table(columns)
    mutation = draw(st.sampled_from(["none", "none", "drop", "extra", "retype", "bomb"]))
    if mutation == "drop":
        table = table.drop_columns([draw(st.sampled_from(table.column_names))])
    elif mutation == "extra":
        table = table.append_column("surprise", pa.array([draw(short_text)] * rows))
    elif mutation == "retype":
        name = draw(st.sampled_from(table.column_names))
        target = draw(st.sampled_from(WRONG_TYPES))
        try:
            column = table.column(name).cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            column = pa.nulls(rows, target)
        table = table.set_column(table.column_names.index(name), name, column)
    elif mutation == "bomb":
        rows = draw(st.integers(50, 4000))
        table = _bomb(rows, draw(st.sampled_from([64 << 10, 256 << 10, 1 << 20])), stream)
    known = (
        [s for s in table.column("seq").to_pylist() if isinstance(s, int)]
        if "seq" in (table.column_names)
        else []
    )
    first, last = (min(known), max(known)) if known else (1, 1)
    batch_id = draw(
        st.sampled_from(
            [f"{DEVICE}.{stream}.{first}-{last}"] * 4
            + [f"{DEVICE}.{stream}.0{first}-{last}", f"{DEVICE}.{stream}.{first}-{2**64}"]
        )
    )
    sink = io.BytesIO()
    if mutation == "bomb":  # one dictionary page, compressed: within the body limit
        options: dict[str, Any] = {"compression": "zstd", "row_group_size": table.num_rows}
        options["dictionary_pagesize_limit"] = 1 << 30
    else:
        options = {
            "compression": draw(st.sampled_from(["zstd", "snappy", "gzip", "none", "lz4"])),
            "use_dictionary": draw(st.booleans()),
            "row_group_size": draw(st.sampled_from([1, 2, 1024])),
        }
    pq.write_table(table, sink, store_schema=draw(st.booleans()), **options)
    return batch_id, sink.getvalue()


def _bomb(rows: int, value_bytes: int, stream: str) -> pa.Table:
    """``rows`` records sharing one ``value_bytes`` string, written as a dictionary: small
    on the wire, ``rows x value_bytes`` once read (up to ~4 GiB here)."""
    value = "x" * value_bytes
    schema = EVENTS_SCHEMA if stream == "events" else GENERIC_SCHEMA
    column = "frame_metadata" if stream == "events" else "body"
    base = {
        "device_id": pa.array([DEVICE] * rows),
        "site_id": pa.array([SITE] * rows),
        "seq": pa.array(range(1, rows + 1), pa.int64()),
        "event_time": pa.array([1_764_000_000_000_000] * rows, pa.timestamp("us", tz="UTC")),
    }
    arrays = []
    for field in schema:
        if field.name in base:
            arrays.append(base[field.name])
        elif field.name == column:
            arrays.append(
                pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array([value]))
            )
        else:
            arrays.append(pa.nulls(rows, field.type))
    return pa.Table.from_arrays(arrays, names=schema.names)


@contextmanager
def peak_rss() -> Iterator[dict[str, int]]:
    """Samples this process's RSS every 2 ms; ``peak`` and ``start`` when done."""
    process = psutil.Process()
    seen = {"start": process.memory_info().rss, "peak": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.002):
            seen["peak"] = max(seen["peak"], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield seen
    finally:
        done.set()
        sampler.join()


@pytest.fixture
async def batch_ingest(tmp_path: Path) -> AsyncIterator[tuple[Ingest, str]]:
    settings = IngestSettings(
        data_dir=tmp_path / "data",
        sweep_interval_s=3600,
        catalog_synchronous="NORMAL",
        max_decoded_batch_bytes=DECODED_LIMIT,
    )
    async with running_ingest(settings) as ingest:
        yield ingest, await ingest.device(DEVICE, SITE)


async def _no_orphans(ingest: Ingest) -> None:
    lake = ingest.settings.lake_dir
    catalog = ingest.app[CATALOG]
    for path in lake.rglob("*"):
        if not path.is_file():
            continue
        assert not is_temp_file(path.name), path
        record = await catalog.get_batch(path.name.removesuffix(".parquet"))
        assert record is not None, f"lake file without a catalog row: {path}"
        assert path.relative_to(lake).as_posix() in record.lake_paths


async def _put_all(ingest: Ingest, token: str, examples: list[tuple[str, bytes]]) -> None:
    for batch_id, body in examples:
        response = await ingest.client.put(
            f"/v1/batches/{batch_id}", data=body, headers=bearer(token) | PARQUET
        )
        text = await response.text()
        assert response.status < 500, (batch_id, response.status, text[:300])
        if response.status >= 400:
            assert '"error"' in text
    await _no_orphans(ingest)


def _run(examples_per_test: int) -> Any:
    return settings(
        max_examples=examples_per_test,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@_run(120)
@given(examples=st.lists(batches(), min_size=1, max_size=3))
async def test_generated_batches_never_fail_the_service(
    batch_ingest: tuple[Ingest, str], examples: list[tuple[str, bytes]]
) -> None:
    ingest, token = batch_ingest
    with peak_rss() as memory:
        await _put_all(ingest, token, examples)
    assert memory["peak"] - memory["start"] < MEMORY_BOUND, memory


@pytest.mark.slow
@_run(1000)
@given(examples=st.lists(batches(), min_size=1, max_size=3))
async def test_generated_batches_never_fail_the_service_slow(
    batch_ingest: tuple[Ingest, str], examples: list[tuple[str, bytes]]
) -> None:
    ingest, token = batch_ingest
    with peak_rss() as memory:
        await _put_all(ingest, token, examples)
    assert memory["peak"] - memory["start"] < MEMORY_BOUND, memory


async def test_a_bomb_under_a_held_id_is_413_before_it_is_decoded(
    batch_ingest: tuple[Ingest, str],
) -> None:
    ingest, token = batch_ingest
    records = [
        {"device_id": DEVICE, "site_id": SITE, "seq": seq, "event_time": 1_764_000_000 + seq}
        for seq in range(1, 801)
    ]
    held = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records, schema=GENERIC_SCHEMA), held)
    batch_id = f"{DEVICE}.critical.1-800"
    stored = await ingest.client.put(
        f"/v1/batches/{batch_id}", data=held.getvalue(), headers=bearer(token) | PARQUET
    )
    assert stored.status == 201
    bomb = io.BytesIO()
    table = _bomb(800, 1 << 20, "critical")
    pq.write_table(table, bomb, compression="zstd", row_group_size=800)
    with peak_rss() as memory:
        response = await ingest.client.put(
            f"/v1/batches/{batch_id}", data=bomb.getvalue(), headers=bearer(token) | PARQUET
        )
    assert response.status == 413, await response.text()  # was a 409 after decoding ~800 MB
    assert memory["peak"] - memory["start"] < MEMORY_BOUND, memory
