"""Wire bytes per event: the engine's Parquet batches against JSON lines + zstd.

The events are the real pipeline's (``bench/pipeline_events.py``: the gate OCR
and face tasks over seeded synthetic frames of three cameras, through the real
``FrameProcessor`` and outbox), so codes, plate tokens, boxes, confidences,
latencies and kept-original hashes vary as they do in a yard.  They are cut
into consecutive batches of one size and each batch is encoded

* by the engine's own encoder (``sync.batches.encode_records``: the body a
  ``PUT /v1/batches/{id}`` carries), and
* as the anchor, in the same run: the same rows (seq, device and site filled
  in, as the Parquet holds them) as compact JSON lines, the batch compressed
  with zstd at level 3 -- what Vector's or Fluent Bit's HTTP output sends with
  zstd compression at its default level.  For the record also the same rows as
one Protobuf message per batch with zstd 3 (``bench/protobuf_events.py``).

The goal rows are at the backlog batch size (the whole set: 5,000 events, 600
with --quick), where a link that came back spends its bytes, and at 1,000.
Smaller batches (an online trickle cuts one every ``batch_max_age_s``) are
reported as information: there Parquet's fixed cost per batch (footer, page
headers) outweighs what its columns save.  Also for the record: JSON at zstd's
highest level, the encode CPU per event against the anchor's, and each lever
of the encoder (``sync.protocol.parquet.writer_options``) undone alone.

    python -m bench.bytes_per_event [--quick]
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench._common import Row, command_for, parse_args, row, write_results
from bench.pipeline_events import pipeline_events
from bench.protobuf_events import protobuf_batch
from sync.batch_columns import records_table
from sync.batches import encode_records
from sync.outbox import OutboxRecord
from sync.protocol import Stream
from sync.protocol.parquet import EVENTS_SCHEMA, writer_options

NAME = "bytes_per_event"
DEVICE_ID, SITE_ID = "yard-07", "port-a"
GOAL_RATIO = 0.8
ANCHOR_LEVEL = 3  # zstd's default level, what a log shipper sends without tuning
_ANCHOR = f"the same rows as JSON lines, zstd level {ANCHOR_LEVEL}, same batch size"


def outbox_records(payloads: Sequence[bytes]) -> list[OutboxRecord]:
    """The payloads as the outbox hands them to the engine (seqs from 1)."""
    records = []
    for seq, payload in enumerate(payloads, start=1):
        created = float(json.loads(payload)["event_time"])
        records.append(OutboxRecord(Stream.EVENTS, seq, payload, created))
    return records


def json_lines(records: Sequence[OutboxRecord]) -> bytes:
    """The batch's rows as compact JSON lines, with what the Parquet batch holds:
    the outbox seq, the device and site."""
    lines = []
    for record in records:
        row_ = json.loads(record.payload)
        row_["seq"] = record.seq
        row_.setdefault("device_id", DEVICE_ID)
        row_.setdefault("site_id", SITE_ID)
        lines.append(json.dumps(row_, separators=(",", ":")).encode())
    return b"\n".join(lines) + b"\n"


def zstd(data: bytes, level: int) -> int:
    return len(pa.Codec("zstd", compression_level=level).compress(data))


def parquet_bytes(records: Sequence[OutboxRecord]) -> int:
    """The engine's body for these records."""
    return len(encode_records(Stream.EVENTS, records, device_id=DEVICE_ID, site_id=SITE_ID).body)


def _batches(records: list[OutboxRecord], size: int) -> list[list[OutboxRecord]]:
    return [records[i : i + size] for i in range(0, len(records) - size + 1, size)]


def per_event(
    records: list[OutboxRecord], size: int, encode: Callable[[list[OutboxRecord]], int]
) -> float:
    batches = _batches(records, size)
    return sum(encode(batch) for batch in batches) / (len(batches) * size)


def _levers(schema: pa.Schema) -> dict[str, dict[str, Any]]:
    """The encoder's writer options with one lever undone (or zstd raised), and
    pyarrow's defaults (the encoder before issue 24): what each lever is worth."""
    ours = writer_options(schema)
    levers: dict[str, dict[str, Any]] = {
        "pyarrow defaults, zstd 3 (the encoder before issue 24)": {
            "compression": "zstd",
            "compression_level": 3,
        },
        "the encoder as is": ours,
    }
    for path, encoding in ours["column_encoding"].items():
        undone = writer_options(schema)
        del undone["column_encoding"][path]
        undone["use_dictionary"].append(path)
        levers[f"without {encoding} on {path} (dictionary)"] = undone
    levers["with statistics on every column"] = {**ours, "write_statistics": True}
    levers["with the Arrow schema in the footer"] = {**ours, "store_schema": True}
    for level in (9, 19):
        levers[f"with zstd level {level}"] = {**ours, "compression_level": level}
    return levers


def _lever_bytes(options: dict[str, Any]) -> Callable[[list[OutboxRecord]], int]:
    def encode(batch: list[OutboxRecord]) -> int:
        table = records_table(Stream.EVENTS, batch, DEVICE_ID, SITE_ID)
        assert table is not None, "the pipeline's payloads take the C++ path"
        sink = io.BytesIO()
        pq.write_table(table, sink, **options)
        return len(sink.getvalue())

    return encode


def _cpu_per_event(records: list[OutboxRecord], size: int, encode: Callable[..., object]) -> float:
    """Process CPU microseconds per event to encode every batch (best of 3)."""
    batches = _batches(records, size)
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for batch in batches:
            encode(batch)
        best = min(best, time.process_time() - started)
    return best / (len(batches) * size) * 1e6


def measure(quick: bool) -> list[Row]:
    frames = 300 if quick else 2500
    records = outbox_records(pipeline_events(frames))
    command = command_for(NAME, quick)
    backlog = len(records)
    rows: list[Row] = []
    for size in (backlog, 1000, 100, 20):
        if size > backlog or (size == 1000 and quick):
            continue
        ours = per_event(records, size, parquet_bytes)
        anchor = per_event(records, size, lambda b: zstd(json_lines(b), ANCHOR_LEVEL))
        goal = size >= 1000
        rows.append(
            row(
                f"wire bytes per event, batches of {size:,}",
                ours,
                "B",
                goal=f"<= {GOAL_RATIO}x anchor" if goal else "info: a smaller batch",
                command=command,
                anchor=_ANCHOR,
                anchor_value=round(anchor, 2),
                met=ours <= GOAL_RATIO * anchor if goal else None,
            )
        )
        strongest = per_event(records, size, lambda b: zstd(json_lines(b), 19))
        rows.append(
            row(
                f"wire bytes per event, batches of {size:,}, vs JSON + zstd 19",
                ours,
                "B",
                goal="info: JSON lines at zstd's highest level",
                command=command,
                anchor="the same rows as JSON lines, zstd level 19",
                anchor_value=round(strongest, 2),
            )
        )
        proto = per_event(
            records, size, lambda b: zstd(protobuf_batch(b, DEVICE_ID, SITE_ID), ANCHOR_LEVEL)
        )
        rows.append(
            row(
                f"wire bytes per event, batches of {size:,}, vs Protobuf + zstd 3",
                ours,
                "B",
                goal="info: one Protobuf message per batch (bench/protobuf_events.py)",
                command=command,
                anchor=f"the same rows as one Protobuf message, zstd level {ANCHOR_LEVEL}",
                anchor_value=round(proto, 2),
            )
        )
    raw = per_event(records, backlog, lambda b: len(json_lines(b)))
    rows.append(
        row(
            "JSON lines per event, uncompressed (the old anchor)",
            raw,
            "B",
            goal="info",
            command=command,
        )
    )
    rows.append(
        row(
            f"encode CPU per event, batches of {backlog:,}",
            _cpu_per_event(records, backlog, parquet_bytes),
            "us",
            goal="info: process CPU, outbox payloads to body (best of 3; machine shared)",
            command=command,
            anchor="JSON lines + zstd 3 of the same payloads",
            anchor_value=round(
                _cpu_per_event(records, backlog, lambda b: zstd(json_lines(b), ANCHOR_LEVEL)), 3
            ),
        )
    )
    for lever, options in _levers(EVENTS_SCHEMA).items():
        rows.append(
            row(
                f"lever: {lever}, batches of {backlog:,}",
                per_event(records, backlog, _lever_bytes(options)),
                "B",
                goal="info: one lever of the encoder undone",
                command=command,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(NAME, argv)
    rows = measure(args.quick)
    write_results(NAME, rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
