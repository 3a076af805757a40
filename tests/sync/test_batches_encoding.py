"""How batch bodies are written: per-column encodings, few statistics, readable by all.

The events are varied as the pipeline's are (codes, plate tokens, boxes,
confidences, latencies, a frame's hash shared by its face and OCR events), from
a seeded generator.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from cloud_ingest.batch_validation import validate_batch
from sync.batches import encode_records
from sync.outbox import OutboxRecord
from sync.protocol import Stream, parse_batch_id
from sync.protocol.parquet import (
    COLUMN_ENCODINGS,
    STATISTICS_COLUMNS,
    decode_batch,
    encode_batch,
)

DEVICE, SITE = "yard-07", "port-a"
START = 1_764_000_000.0
CAMERAS = ("gate-in", "gate-out", "yard-east")


def _box(rng: random.Random) -> list[int]:
    x, y = rng.randrange(0, 1800), rng.randrange(0, 1000)
    return [x, y, x + rng.randrange(40, 460), y + rng.randrange(40, 90)]


def varied_payloads(frames: int, seed: int = 7) -> list[bytes]:
    """Two events per frame (faces, then OCR), as the pipeline writes them."""
    rng = random.Random(seed)
    payloads = []
    for frame in range(frames):
        sha = rng.randbytes(32).hex()
        common = {
            "device_id": DEVICE,
            "site_id": SITE,
            "seq": 0,
            "event_time": START + (frame // 3) * 1.5 + (frame % 3) * 0.37,
            "camera_id": CAMERAS[frame % 3],
            "raw_sha256": sha,
            "frame_metadata": None,
        }
        faces = {
            **common,
            "model_name": "mediapipe-face-short-range",
            "model_version": "0.10.21+bbff11ce",
            "task": "face_anonymize",
            "latency_ms": round(rng.gauss(100, 8), 2),
            "sla_violated": False,
            "results": [
                {
                    "kind": "face",
                    "value": "",
                    "confidence": round(rng.uniform(0.5, 1), 4),
                    "valid": None,
                    "box": _box(rng),
                }
                for _ in range(rng.randrange(0, 3))
            ],
        }
        code = "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ", k=3)) + "U"
        ocr = {
            **common,
            "model_name": "pp-ocrv4",
            "model_version": "1.4.4+det.d2a7720d.rec.48fc40f2",
            "task": "gate_ocr",
            "latency_ms": round(rng.gauss(600, 30), 2),
            "sla_violated": rng.random() < 0.5,
            "results": [
                {
                    "kind": "container_code",
                    "value": code + f"{rng.randrange(10**7):07d}",
                    "confidence": round(rng.uniform(0.8, 1), 4),
                    "valid": rng.random() < 0.9,
                    "box": _box(rng),
                },
                {
                    "kind": "plate",
                    "value": "pt1:" + rng.randbytes(16).hex(),
                    "confidence": round(rng.uniform(0.6, 1), 4),
                    "valid": True,
                    "box": _box(rng),
                },
            ],
        }
        payloads += [json.dumps(e, separators=(",", ":")).encode() for e in (faces, ocr)]
    return payloads


def records(payloads: list[bytes]) -> list[OutboxRecord]:
    return [
        OutboxRecord(Stream.EVENTS, seq, p, START + seq) for seq, p in enumerate(payloads, start=1)
    ]


def body_of(payloads: list[bytes]) -> tuple[str, bytes]:
    batch = encode_records(Stream.EVENTS, records(payloads), device_id=DEVICE, site_id=SITE)
    return batch.batch_id, batch.body


def column_chunks(body: bytes) -> dict[str, pq.ColumnChunkMetaData]:
    group = pq.ParquetFile(io.BytesIO(body)).metadata.row_group(0)
    chunks = (group.column(i) for i in range(group.num_columns))
    return {chunk.path_in_schema: chunk for chunk in chunks}


def test_each_column_is_written_with_its_encoding() -> None:
    chunks = column_chunks(body_of(varied_payloads(300))[1])
    assert set(COLUMN_ENCODINGS) < set(chunks)
    for path, chunk in chunks.items():
        if path in COLUMN_ENCODINGS:
            assert COLUMN_ENCODINGS[path] in chunk.encodings, path
            assert "RLE_DICTIONARY" not in chunk.encodings, path
        else:
            assert "RLE_DICTIONARY" in chunk.encodings or chunk.physical_type == "BOOLEAN", path


def test_statistics_only_on_the_columns_queries_filter_on() -> None:
    chunks = column_chunks(body_of(varied_payloads(50))[1])
    with_stats = {path for path, chunk in chunks.items() if chunk.is_stats_set}
    assert with_stats == {path for path in chunks if path in STATISTICS_COLUMNS}
    assert {"seq", "event_time", "camera_id"} <= with_stats
    assert "raw_sha256" not in with_stats


def test_the_ingest_service_takes_the_body_as_it_is() -> None:
    payloads = varied_payloads(120)
    batch_id, body = body_of(payloads)
    valid = validate_batch(parse_batch_id(batch_id), SITE, body)
    assert valid.body_is_canonical  # stored unchanged, not re-encoded
    assert valid.table.column("seq").to_pylist() == list(range(1, len(payloads) + 1))
    rows = valid.table.to_pylist()
    for payload, stored in zip(payloads, rows, strict=True):
        event = json.loads(payload)
        assert stored["raw_sha256"] == event["raw_sha256"]
        assert [r["box"] for r in stored["results"]] == [r["box"] for r in event["results"]]
        assert [r["value"] for r in stored["results"]] == [r["value"] for r in event["results"]]
        assert stored["latency_ms"] == float(pa.scalar(event["latency_ms"], pa.float32()).as_py())


def test_duckdb_reads_the_body(tmp_path: Path) -> None:
    payloads = varied_payloads(60)
    path = tmp_path / "batch.parquet"
    path.write_bytes(body_of(payloads)[1])
    with duckdb.connect() as db:
        got = db.execute(
            "SELECT seq, raw_sha256, results[1].box, epoch(event_time) FROM read_parquet(?) "
            "ORDER BY seq",
            [str(path)],
        ).fetchall()
    events = [json.loads(p) for p in payloads]
    assert [g[0] for g in got] == list(range(1, len(events) + 1))
    assert [g[1] for g in got] == [e["raw_sha256"] for e in events]
    assert [g[2] for g in got] == [e["results"][0]["box"] if e["results"] else None for e in events]
    assert [g[3] for g in got] == [e["event_time"] for e in events]


def test_generic_streams_round_trip() -> None:
    rows = [
        {"device_id": DEVICE, "site_id": SITE, "seq": i, "event_time": START + i,
         "model_name": None, "model_version": None, "kind": "cpu", "body": f'{{"p": {i}}}'}
        for i in range(1, 40)
    ]  # fmt: skip
    body = encode_batch(Stream.TELEMETRY, rows)
    assert "DELTA_BINARY_PACKED" in column_chunks(body)["seq"].encodings
    assert decode_batch(Stream.TELEMETRY, body).column("body").to_pylist() == [
        r["body"] for r in rows
    ]


def test_varied_events_take_under_0_8x_their_json_lines_with_zstd() -> None:
    payloads = varied_payloads(1000)
    _, body = body_of(payloads)
    events = []
    for seq, payload in enumerate(payloads, start=1):
        events.append(json.dumps({**json.loads(payload), "seq": seq}, separators=(",", ":")))
    anchor = pa.Codec("zstd", compression_level=3).compress(("\n".join(events) + "\n").encode())
    assert len(body) <= 0.8 * len(anchor), (len(body), len(anchor))
