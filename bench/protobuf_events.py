"""Events as one Protobuf message per batch: a second anchor for ``bench/bytes_per_event.py``.

The schema mirrors the events columns (proto3; ``event_time`` as int64
microseconds, floats as float32, the box as packed int32, ``valid`` optional
since a face has none) and is built in code with ``descriptor_pb2``, so no
``protoc`` step: ``Batch { repeated Event events = 1; }``.  protobuf is already
installed (onnxruntime needs it).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

from google.protobuf import (  # type: ignore[import-untyped]  # no stubs installed
    descriptor_pb2,
    descriptor_pool,
    message_factory,
)

from sync.outbox import OutboxRecord

__all__ = ["batch_message_class", "protobuf_batch"]

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_RESULT_FIELDS = (
    ("kind", _F.TYPE_STRING, _OPTIONAL),
    ("value", _F.TYPE_STRING, _OPTIONAL),
    ("confidence", _F.TYPE_FLOAT, _OPTIONAL),
    ("valid", _F.TYPE_BOOL, _OPTIONAL),
    ("box", _F.TYPE_INT32, _REPEATED),
)
_EVENT_FIELDS = (
    ("device_id", _F.TYPE_STRING),
    ("site_id", _F.TYPE_STRING),
    ("seq", _F.TYPE_INT64),
    ("event_time_us", _F.TYPE_INT64),
    ("model_name", _F.TYPE_STRING),
    ("model_version", _F.TYPE_STRING),
    ("camera_id", _F.TYPE_STRING),
    ("task", _F.TYPE_STRING),
    ("latency_ms", _F.TYPE_FLOAT),
    ("sla_violated", _F.TYPE_BOOL),
    ("results", _F.TYPE_MESSAGE),
    ("raw_sha256", _F.TYPE_STRING),
    ("frame_metadata", _F.TYPE_STRING),
)
_TEXT = ("model_name", "model_version", "camera_id", "task", "raw_sha256", "frame_metadata")


@functools.cache
def batch_message_class() -> Any:
    """The generated ``bench.Batch`` message class."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="bench_events.proto", package="bench", syntax="proto3"
    )
    result = proto.message_type.add(name="Result")
    result.oneof_decl.add(name="_valid")  # proto3 ``optional bool valid``
    for number, (name, type_, label) in enumerate(_RESULT_FIELDS, start=1):
        field = result.field.add(name=name, number=number, type=type_, label=label)
        if name == "valid":
            field.proto3_optional = True
            field.oneof_index = 0
    event = proto.message_type.add(name="Event")
    for number, (name, type_) in enumerate(_EVENT_FIELDS, start=1):
        label = _REPEATED if name == "results" else _OPTIONAL
        field = event.field.add(name=name, number=number, type=type_, label=label)
        if name == "results":
            field.type_name = ".bench.Result"
    batch = proto.message_type.add(name="Batch")
    batch.field.add(
        name="events", number=1, type=_F.TYPE_MESSAGE, label=_REPEATED, type_name=".bench.Event"
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("bench.Batch"))


def protobuf_batch(records: Sequence[OutboxRecord], device_id: str, site_id: str) -> bytes:
    """The records as one serialized ``Batch`` (seq from the outbox, device/site filled in)."""
    message = batch_message_class()()
    for record in records:
        row = json.loads(record.payload)
        event = message.events.add()
        event.device_id = row.get("device_id") or device_id
        event.site_id = row.get("site_id") or site_id
        event.seq = record.seq
        event.event_time_us = round(float(row["event_time"]) * 1_000_000)
        for name in _TEXT:
            if row.get(name) is not None:
                setattr(event, name, row[name])
        if row.get("latency_ms") is not None:
            event.latency_ms = row["latency_ms"]
        event.sla_violated = bool(row.get("sla_violated"))
        for result in row.get("results") or []:
            added = event.results.add(
                kind=result["kind"],
                value=result["value"],
                confidence=result["confidence"],
                box=result["box"],
            )
            if result.get("valid") is not None:
                added.valid = result["valid"]
    return bytes(message.SerializeToString())
