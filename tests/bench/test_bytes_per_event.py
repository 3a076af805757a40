"""The bytes-per-event anchor carries exactly the rows the Parquet batch carries."""

from __future__ import annotations

import json

import pyarrow as pa

from bench.bytes_per_event import (
    DEVICE_ID,
    SITE_ID,
    json_lines,
    outbox_records,
    parquet_bytes,
    per_event,
    zstd,
)
from bench.protobuf_events import batch_message_class, protobuf_batch
from sync.batches import encode_records
from sync.outbox import OutboxRecord
from sync.protocol import Stream
from sync.protocol.parquet import decode_batch


def _payload(i: int) -> bytes:
    record = {
        "device_id": DEVICE_ID,
        "site_id": SITE_ID,
        "seq": 0,
        "event_time": 1_764_000_000.0 + i * 0.37,
        "model_name": "pp-ocrv4",
        "model_version": "1.4.4",
        "camera_id": f"gate-{i % 3}",
        "task": "gate_ocr",
        "latency_ms": 300.0 + i * 1.25,
        "sla_violated": i % 5 == 0,
        "results": [
            {
                "kind": "container_code",
                "value": f"MSKU{i:07d}",
                "confidence": 0.5 + (i % 40) / 100,
                "valid": i % 3 == 0,
                "box": [i, 2 * i, 3 * i + 10, 4 * i + 10],
            }
        ],
        "raw_sha256": f"{i:064x}",
        "frame_metadata": None,
    }
    return json.dumps(record, separators=(",", ":")).encode()


def test_json_lines_hold_the_rows_of_the_parquet_batch() -> None:
    records = outbox_records([_payload(i) for i in range(50)])
    lines = [json.loads(line) for line in json_lines(records).splitlines()]
    body = encode_records(Stream.EVENTS, records, device_id=DEVICE_ID, site_id=SITE_ID).body
    table = decode_batch(Stream.EVENTS, body)
    assert [line["seq"] for line in lines] == table.column("seq").to_pylist() == list(range(1, 51))
    for line, stored in zip(lines, table.to_pylist(), strict=True):
        assert line["device_id"] == stored["device_id"] == DEVICE_ID
        assert line["camera_id"] == stored["camera_id"]
        assert line["raw_sha256"] == stored["raw_sha256"]
        assert [r["value"] for r in line["results"]] == [r["value"] for r in stored["results"]]
        assert [r["box"] for r in line["results"]] == [r["box"] for r in stored["results"]]
        assert stored["event_time"].timestamp() == line["event_time"]


def test_per_event_counts_whole_batches_only() -> None:
    records = outbox_records([_payload(i) for i in range(25)])
    sizes: list[int] = []

    def encode(batch: list[OutboxRecord]) -> int:
        sizes.append(len(batch))
        return 1000

    assert per_event(records, 10, encode) == 100.0
    assert sizes == [10, 10]  # the last 5 records make no batch of 10


def test_both_encodings_shrink_with_compression() -> None:
    records = outbox_records([_payload(i) for i in range(200)])
    raw = len(json_lines(records))
    assert zstd(json_lines(records), 3) < raw
    assert zstd(json_lines(records), 19) <= zstd(json_lines(records), 3)
    assert 0 < parquet_bytes(records) < raw
    assert pa.Codec.is_available("zstd")


def test_protobuf_anchor_holds_the_same_rows() -> None:
    records = outbox_records([_payload(i) for i in range(30)])
    message = batch_message_class()()
    message.ParseFromString(protobuf_batch(records, DEVICE_ID, SITE_ID))
    assert [e.seq for e in message.events] == list(range(1, 31))
    for record, event in zip(records, message.events, strict=True):
        row_ = json.loads(record.payload)
        assert event.device_id == DEVICE_ID and event.camera_id == row_["camera_id"]
        assert event.event_time_us == round(row_["event_time"] * 1_000_000)
        assert event.raw_sha256 == row_["raw_sha256"]
        assert event.frame_metadata == ""  # null: proto3's default, no bytes
        (result,) = event.results
        assert result.value == row_["results"][0]["value"]
        assert list(result.box) == row_["results"][0]["box"]
        assert result.valid == row_["results"][0]["valid"] and result.HasField("valid")
        assert result.confidence == float(
            pa.scalar(row_["results"][0]["confidence"], pa.float32()).as_py()
        )
