"""Batch cutting and encoding (pure): bounds, age, deterministic ids and bytes, bad records."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.batches import BadRecord, BatchLimits, _loads, cut_batch, encode_records
from sync.errors import RecordRejected
from sync.outbox import BlobRef, OutboxRecord
from sync.protocol import Stream, WireFormatError, make_batch_id, parse_batch_id
from sync.protocol.parquet import decode_batch

NOW = 1_800_000_000.0


def event_payload(i: int, **extra: object) -> bytes:
    row = {
        "event_time": NOW + i,
        "model_name": "ppocr",
        "model_version": "4.0",
        "camera_id": "cam-1",
        "task": "gate_ocr",
        "latency_ms": 12.5,
        "sla_violated": False,
        "results": [
            {
                "kind": "container_code",
                "value": f"MSKU{i:06d}5",
                "confidence": 0.9,
                "valid": True,
                "box": [1, 2, 3, 4],
            }
        ],
        "raw_sha256": None,
        **extra,
    }
    return json.dumps(row, separators=(",", ":")).encode()


def records(n: int, *, first_seq: int = 1, created_at: float = NOW) -> list[OutboxRecord]:
    return [
        OutboxRecord(Stream.EVENTS, first_seq + 2 * i, event_payload(i), created_at)
        for i in range(n)
    ]


def test_cut_waits_for_age_unless_full_or_flushed() -> None:
    limits = BatchLimits(max_records=10, max_bytes=1 << 20, max_age_s=5)
    young = records(3, created_at=NOW - 1)
    chosen, wait = cut_batch(young, limits, NOW)
    assert chosen == [] and wait == pytest.approx(4)
    assert cut_batch(young, limits, NOW, flush=True) == (young, 0.0)
    assert cut_batch(young, limits, NOW + 4) == (young, 0.0)
    many = records(25, created_at=NOW)
    chosen, wait = cut_batch(many, limits, NOW)
    assert chosen == many[:10] and wait == 0
    assert cut_batch([], limits, NOW) == ([], math.inf)


def test_cut_respects_bytes_but_takes_one_oversized_record() -> None:
    recs = records(5)
    size = len(recs[0].payload)
    limits = BatchLimits(max_records=100, max_bytes=2 * size + 1, max_age_s=0)
    assert cut_batch(recs, limits, NOW)[0] == recs[:2]
    tiny = BatchLimits(max_records=100, max_bytes=1, max_age_s=60)
    assert cut_batch(recs, tiny, NOW)[0] == recs[:1]


@settings(max_examples=50)
@given(
    n=st.integers(1, 60),
    max_records=st.integers(1, 30),
    max_bytes=st.integers(1, 5000),
    flush=st.booleans(),
)
def test_cut_is_a_bounded_prefix(n: int, max_records: int, max_bytes: int, flush: bool) -> None:
    recs = records(n)
    chosen, _ = cut_batch(recs, BatchLimits(max_records, max_bytes, 3600), NOW, flush=flush)
    assert chosen == recs[: len(chosen)]
    if chosen:
        assert len(chosen) <= max_records
        assert len(chosen) == 1 or sum(len(r.payload) for r in chosen) <= max_bytes


def test_encode_sets_seq_device_site_and_id() -> None:
    recs = records(4, first_seq=7)
    batch = encode_records(Stream.EVENTS, recs, device_id="gate-01", site_id="yard-a")
    assert batch.batch_id == "gate-01.events.7-13"
    assert parse_batch_id(batch.batch_id).last_seq == 13
    table = decode_batch(Stream.EVENTS, batch.body)
    assert table.column("seq").to_pylist() == [7, 9, 11, 13]
    assert set(table.column("device_id").to_pylist()) == {"gate-01"}
    assert set(table.column("site_id").to_pylist()) == {"yard-a"}
    assert table.column("model_version").to_pylist() == ["4.0"] * 4
    assert batch.records == 4


def test_same_records_same_bytes() -> None:
    """After a crash the pinned range is re-encoded: the digest must not change."""
    one = encode_records(Stream.EVENTS, records(50), device_id="d-1", site_id="s-1")
    two = encode_records(Stream.EVENTS, records(50), device_id="d-1", site_id="s-1")
    assert one.body == two.body and one.boundary == two.boundary


def test_producer_device_id_wins_and_event_time_defaults() -> None:
    rec = OutboxRecord(Stream.TELEMETRY, 3, b'{"kind":"fps","body":"{}"}', NOW)
    batch = encode_records(Stream.TELEMETRY, [rec], device_id="d-1", site_id="s-1")
    table = decode_batch(Stream.TELEMETRY, batch.body)
    assert table.column("event_time")[0].as_py().timestamp() == NOW


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[1,2]", b'{"latency_ms":"slow"}', b"\xff\xfe"],
)
def test_bad_record_is_named(payload: bytes) -> None:
    recs = [*records(2), OutboxRecord(Stream.EVENTS, 99, payload, NOW)]
    with pytest.raises(BadRecord) as info:
        encode_records(Stream.EVENTS, recs, device_id="d-1", site_id="s-1")
    assert info.value.seq == 99 and not info.value.retryable
    assert "seq 99" in str(info.value)


def test_parquet_is_much_smaller_than_json_lines() -> None:
    recs = records(2000)
    batch = encode_records(Stream.EVENTS, recs, device_id="gate-01", site_id="yard-a")
    json_lines = sum(len(r.payload) + 1 for r in recs)
    assert len(batch.body) < 0.2 * json_lines


@pytest.mark.parametrize(
    "payload",
    [
        b'{"a":1,"b":[1.5,null,true],"c":{"d":"\\u00e9"}}',
        '{"x":"\u00e9"}'.encode(),
        b' {"a":1}',
        b'{"a":1} ',
        b"\xef\xbb\xbf" + b'{"a":1}',
        '{"a":1}'.encode("utf-16"),
        b'{"a":-Infinity,"b":1e400}',
        b"[1,2]",
    ],
)
def test_fast_json_path_is_json_loads(payload: bytes) -> None:
    assert _loads(payload) == json.loads(payload)


@pytest.mark.parametrize("payload", [b'{"a":', b"", b"\xff{}", b'{"a":1}{"b":2}'])
def test_fast_json_path_fails_like_json_loads(payload: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(payload)
    with pytest.raises(ValueError):
        _loads(payload)


@pytest.mark.parametrize("device_id", ["gate-01\n", "", "-gate", "gate.01", "g" * 65])
def test_a_batch_id_is_refused_for_a_bad_device_id(device_id: str) -> None:
    """``gate-01\\n`` passed ``DEVICE_ID_RE.match`` (its ``$`` matches before a newline)."""
    with pytest.raises(WireFormatError, match="invalid device id"):
        make_batch_id(device_id, Stream.EVENTS, 1, 2)


def test_a_batch_id_or_blob_sha_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(WireFormatError, match="invalid batch id"):
        parse_batch_id("gate-01.events.1-2\n")
    with pytest.raises(RecordRejected, match="64 lowercase hex"):
        BlobRef("a" * 64 + "\n", 1)
