"""The C++ JSON path of batch encoding gives the row path's bytes, or steps aside.

``records_table`` must build exactly the table the row path (``_encode_rows``)
builds - a batch pinned before a crash or an upgrade is re-encoded and the
cloud compares digests - and return ``None`` whenever it cannot be sure, so
the row path decides (and names a bad record).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.batch_columns import records_table
from sync.batches import BadRecord, _encode_rows, encode_records
from sync.outbox import OutboxRecord
from sync.protocol import Stream
from sync.protocol.parquet import encode_table

NOW = 1_800_000_000.0
DEVICE, SITE = "gate-01", "yard-a"

_MISSING = object()


def appliance_event(i: int) -> dict[str, Any]:
    """What appliance/pipeline.py writes to the outbox for one task result."""
    return {
        "device_id": DEVICE,
        "site_id": SITE,
        "seq": 0,
        "event_time": NOW + i / 7,
        "model_name": "ppocr",
        "model_version": "4.0",
        "camera_id": "cam-1",
        "task": "gate_ocr",
        "latency_ms": round(12.5 + i / 3, 2),
        "sla_violated": i % 5 == 0,
        "results": [
            {
                "kind": "container_code",
                "value": f"MSKU{i:06d}5",
                "confidence": 0.9 - i / 1000,
                "valid": True,
                "box": [10, 20, 300, 80],
            },
            {"kind": "plate", "value": "tok-abc", "confidence": 0.8, "valid": None, "box": None},
        ],
        "raw_sha256": None if i % 3 else "ab" * 32,
        "frame_metadata": None if i % 2 else '{"lane":3,"transaction_id":"T-9"}',
    }


def records_of(payloads: list[bytes], stream: Stream = Stream.EVENTS) -> list[OutboxRecord]:
    return [OutboxRecord(stream, 3 + 2 * i, p, NOW + i) for i, p in enumerate(payloads)]


def dumps(row: dict[str, Any]) -> bytes:
    return json.dumps(row, separators=(",", ":")).encode()


def reference(stream: Stream, records: list[OutboxRecord]) -> bytes | BadRecord:
    try:
        return _encode_rows(stream, records, DEVICE, SITE)
    except BadRecord as exc:
        return exc


def assert_same_as_rows(stream: Stream, records: list[OutboxRecord]) -> bool:
    """Both paths agree; returns whether the C++ path took the batch."""
    expected = reference(stream, records)
    table = records_table(stream, records, DEVICE, SITE)
    if table is not None:
        assert isinstance(expected, bytes), f"C++ path took what the row path refuses: {expected}"
        assert encode_table(table) == expected
    if isinstance(expected, bytes):
        assert encode_records(stream, records, device_id=DEVICE, site_id=SITE).body == expected
    else:
        with pytest.raises(BadRecord) as info:
            encode_records(stream, records, device_id=DEVICE, site_id=SITE)
        assert info.value.seq == expected.seq
    return table is not None


def test_appliance_events_take_the_fast_path_with_the_same_bytes() -> None:
    records = records_of([dumps(appliance_event(i)) for i in range(500)])
    assert assert_same_as_rows(Stream.EVENTS, records)


def test_defaults_fill_missing_keys_only() -> None:
    row = appliance_event(1)
    del row["device_id"], row["site_id"], row["event_time"]
    assert assert_same_as_rows(Stream.EVENTS, records_of([dumps(row)] * 3))
    nulled = {**appliance_event(2), "event_time": None}
    assert assert_same_as_rows(Stream.EVENTS, records_of([dumps(nulled)]))
    # A null the producer wrote is not a missing key: the row path keeps it.
    explicit = {**appliance_event(3), "device_id": None}
    assert not assert_same_as_rows(Stream.EVENTS, records_of([dumps(row), dumps(explicit)]))


def test_telemetry_generic_schema() -> None:
    body = json.dumps({"fps": 9.5, "text": "é\u2028"}, separators=(",", ":"))
    rows = [{"kind": "appliance", "body": body, "event_time": NOW + i} for i in range(20)]
    assert assert_same_as_rows(Stream.TELEMETRY, records_of([dumps(r) for r in rows]))


@pytest.mark.parametrize(
    "odd",
    [
        b"null",  # pyarrow.json crashes on a first-line top-level null; never handed to it
        b"[1]",
        b'{"task":"a"}\n{"task":"b"}',  # one payload, two lines
        b'{"task":"a"}null',
        b'{"task":"a\tb"}',  # a raw control character: strict json refuses it
        b'{"task":"\xff"}',
        b'{"task":"\\ud800"}',
        b'{"task":"a","task":"b"}',
        b'{"latency_ms":16777217}',  # an int float32 cannot hold: the row path refuses
        b'{"event_time":1e12}',
        b'{"event_time":NaN}',
        b'{"results":[{"box":[1.0]}]}',  # the row path takes 1.0 for an int32
        b" {}",
        b"",
    ],
)
def test_odd_payloads_leave_the_decision_to_the_row_path(odd: bytes) -> None:
    payloads = [dumps(appliance_event(1)), odd, dumps(appliance_event(2))]
    assert not assert_same_as_rows(Stream.EVENTS, records_of(payloads))
    assert not assert_same_as_rows(Stream.EVENTS, records_of([odd]))


# Values of every JSON type, including the awkward ones, for any column.
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.sampled_from([0, 1, 2**24, 2**24 + 1, 2**31, 2**53 + 1, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.1, 1e300, -0.0, 5e-324, 1.5, NOW, 9.1e9]),
    st.text(max_size=8),
    st.sampled_from(["", "é", "\u2028", "\x00", "a\\b", '"']),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["kind", "value", "confidence", "box", "x"]), inner),
    ),
    max_leaves=8,
)
_good_result = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(["plate", "container_code"]),
        "value": st.text(max_size=12),
        "confidence": st.floats(0, 1),
        "valid": st.one_of(st.none(), st.booleans()),
        "box": st.one_of(st.none(), st.lists(st.integers(-(2**31), 2**31 - 1), max_size=4)),
        "extra": _scalars,
    },
)
_columns = {
    "device_id": st.one_of(st.just(DEVICE), st.none(), _scalars),
    "site_id": st.one_of(st.just(SITE), st.none()),
    "seq": _scalars,
    "event_time": st.one_of(st.floats(0, 4e9), st.integers(0, 2**34), _scalars),
    "model_name": st.one_of(st.text(max_size=6), _scalars),
    "camera_id": st.text(max_size=6),
    "latency_ms": st.one_of(st.floats(0, 1e4), st.integers(0, 2**26), _scalars),
    "sla_violated": st.one_of(st.booleans(), _scalars),
    "results": st.one_of(st.lists(_good_result, max_size=3), _values),
    "raw_sha256": st.one_of(st.none(), st.text(max_size=4)),
    "frame_metadata": st.one_of(st.none(), st.text(max_size=8), _scalars),
    "unknown": _values,
}


@st.composite
def event_rows(draw: st.DrawFn) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, values in _columns.items():
        value = draw(st.one_of(st.just(_MISSING), values))
        if value is not _MISSING:
            row[name] = value
    return row


def _json(row: dict[str, Any]) -> bytes:
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.one_of(event_rows(), st.builds(appliance_event, st.integers(0, 99))),
        min_size=1,
        max_size=6,
    )
)
def test_generated_payloads_same_bytes_or_row_path(rows: list[dict[str, Any]]) -> None:
    assert_same_as_rows(Stream.EVENTS, records_of([_json(r) for r in rows]))


def test_float_edge_values_match() -> None:
    values = [0.1, 1 / 3, 16777216.0, 1e-45, 1e-300, -0.0, 123.456, math.pi, 16777217.5]
    rows = [{**appliance_event(i), "latency_ms": v} for i, v in enumerate(values)]
    assert assert_same_as_rows(Stream.EVENTS, records_of([dumps(r) for r in rows]))
    # Large floats are integral: indistinguishable from ints, left to the row path.
    big = [{**appliance_event(1), "latency_ms": v} for v in (3.4028235e38, 1e300)]
    assert not assert_same_as_rows(Stream.EVENTS, records_of([dumps(r) for r in big]))
