"""Value types of the outbox and their byte layout on disk (pure, no I/O).

Key layout (one RocksDB column family per class, named after ``Stream.value``)::

    key   = seq as 8 bytes big-endian          (so byte order == seq order)
    value = b"\\x01" | created_at f64 BE | expires_at f64 BE (NaN: none) | payload

Raw classes hold a ``BlobRef`` (JSON) as payload, never the raw bytes.  The
``meta`` column family holds, under these keys:

* ``seq/reserved``        - 8 bytes: every seq ever handed out is below it;
* ``ack/<class>``         - 8 bytes: acknowledged watermark of the class;
* ``count/<class>``       - 16 bytes: live records and bytes of the class;
* ``pin/<class>/<first>`` - 8 bytes last seq + batch id (utf-8);
* ``receipt/<key>``       - 8 bytes: the first seq of the append that carried
  the receipt ``<key>`` (an opaque caller's key, e.g. a spool file's identity).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from sync.errors import RecordRejected
from sync.outbox.eviction import ClassUsage
from sync.protocol import SHA256_RE, Stream

__all__ = [
    "COUNT",
    "FORMAT_VERSION",
    "HEADER",
    "KEY_SIZE",
    "MAX_RECEIPT_BYTES",
    "META_CF",
    "RECEIPT_PREFIX",
    "RESERVED_KEY",
    "U64",
    "VALUE_HEADER",
    "BatchBoundary",
    "BlobRef",
    "ClassStats",
    "LoadedState",
    "OutboxRecord",
    "OutboxStats",
    "Removal",
    "ack_key",
    "check_receipt",
    "count_key",
    "decode_key",
    "decode_record",
    "decode_value",
    "encode_header",
    "encode_key",
    "encode_value",
    "pin_key",
    "pin_prefix",
    "record_size",
]

_KEY: Final = struct.Struct(">Q")
HEADER: Final = struct.Struct(">Bdd")
"""The value header (format version, created_at, expires_at or NaN), precompiled."""
FORMAT_VERSION: Final = 1
KEY_SIZE: Final = _KEY.size
VALUE_HEADER: Final = HEADER.size
MAX_SEQ: Final = (1 << 63) - 1
MAX_RECEIPT_BYTES: Final = 512
"""The longest receipt key (a spool file's camera, name and identity fit in it)."""


class OutboxRecord(NamedTuple):
    """One stored record: its class, device-monotonic seq, payload and wall-clock birth.

    A NamedTuple, not a frozen dataclass: reads build one per record, and a tuple
    is built several times faster (a drain reads records by the thousand).
    """

    stream: Stream
    seq: int
    payload: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class BlobRef:
    """Reference to a raw blob in the blob store: what raw classes hold instead of bytes."""

    sha256: str
    size: int
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.sha256, str) or not SHA256_RE.fullmatch(self.sha256):
            raise RecordRejected(f"blob ref sha256 must be 64 lowercase hex chars: {self.sha256!r}")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise RecordRejected(f"blob ref size must be a non-negative int: {self.size!r}")
        if not isinstance(self.meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.meta.items()
        ):
            raise RecordRejected("blob ref meta must map str to str")

    def to_bytes(self) -> bytes:
        body = {"sha256": self.sha256, "size": self.size, "meta": self.meta}
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> BlobRef:
        try:
            body = json.loads(data)
            return cls(sha256=body["sha256"], size=body["size"], meta=body.get("meta", {}))
        except (ValueError, KeyError, TypeError) as exc:
            raise RecordRejected(f"not a blob ref: {data[:80]!r}") from exc


@dataclass(frozen=True, slots=True)
class BatchBoundary:
    """A seq range handed to the sync side under a batch id; persisted before sending."""

    stream: Stream
    first_seq: int
    last_seq: int
    batch_id: str


@dataclass(frozen=True, slots=True)
class ClassStats:
    records: int
    bytes: int
    oldest_age_s: float


@dataclass(frozen=True, slots=True)
class OutboxStats:
    per_class: dict[Stream, ClassStats]
    disk_bytes: int
    evictions: dict[str, int]
    rejections: dict[str, int]
    next_seq: int
    quarantined: list[str]
    # where group fsyncs ran, "in_place" or "on_thread" (sync/outbox/fsync_placement.py)
    fsyncs: dict[str, int] = field(default_factory=dict)


def encode_key(seq: int) -> bytes:
    return _KEY.pack(seq)


def decode_key(key: bytes) -> int:
    seq: int = _KEY.unpack(key)[0]
    return seq


def encode_header(created_at: float, expires_at: float | None) -> bytes:
    """The value header; records appended together share it (prepend it to each payload)."""
    expiry = math.nan if expires_at is None else expires_at
    return HEADER.pack(FORMAT_VERSION, created_at, expiry)


def encode_value(payload: bytes, created_at: float, expires_at: float | None) -> bytes:
    return encode_header(created_at, expires_at) + payload


def decode_value(value: bytes) -> tuple[float, float | None, bytes]:
    """Return ``(created_at, expires_at, payload)``; ValueError when the layout is wrong."""
    if len(value) < VALUE_HEADER:
        raise ValueError(f"outbox value too short ({len(value)} bytes)")
    version, created_at, expires_at = HEADER.unpack_from(value)
    if version != FORMAT_VERSION:
        raise ValueError(f"unknown outbox value format {version}")
    return created_at, None if math.isnan(expires_at) else expires_at, value[VALUE_HEADER:]


def decode_record(stream: Stream, key: bytes, value: bytes) -> tuple[OutboxRecord, float | None]:
    """The record stored under ``key`` / ``value`` and its own expiry (None: none).

    ValueError when the value's layout is wrong.
    """
    created_at, expires_at, payload = decode_value(value)
    return OutboxRecord(stream, decode_key(key), payload, created_at), expires_at


def check_receipt(key: object) -> bytes:
    """A receipt key as stored: ``bytes`` as given, a ``str`` in utf-8, 1 to
    ``MAX_RECEIPT_BYTES`` bytes.  Anything else is ``RecordRejected`` (do not retry)."""
    if isinstance(key, str):
        try:
            key = key.encode()
        except UnicodeEncodeError as exc:
            raise RecordRejected(f"receipt key is not valid unicode: {key!r}") from exc
    elif isinstance(key, bytes | bytearray | memoryview):
        key = bytes(key)
    else:
        raise RecordRejected(f"receipt key must be bytes or str, not {type(key).__name__}")
    if not 0 < len(key) <= MAX_RECEIPT_BYTES:
        raise RecordRejected(
            f"receipt key must be 1 to {MAX_RECEIPT_BYTES} bytes, not {len(key)}: {key[:40]!r}"
        )
    return key


def record_size(payload_len: int) -> int:
    """Bytes a record accounts for against the size cap (key + header + payload)."""
    return KEY_SIZE + VALUE_HEADER + payload_len


# ---------------------------------------------------------------------- meta keys

META_CF: Final = "meta"
U64: Final = struct.Struct(">Q")
COUNT: Final = struct.Struct(">QQ")
RESERVED_KEY: Final = b"seq/reserved"
RECEIPT_PREFIX: Final = b"receipt/"


def ack_key(stream: Stream) -> bytes:
    return b"ack/" + stream.value.encode()


def count_key(stream: Stream) -> bytes:
    return b"count/" + stream.value.encode()


def pin_prefix(stream: Stream) -> bytes:
    return b"pin/" + stream.value.encode() + b"/"


def pin_key(stream: Stream, first_seq: int) -> bytes:
    return pin_prefix(stream) + encode_key(first_seq)


@dataclass(slots=True)
class LoadedState:
    """What the outbox needs in memory, read back from disk at open."""

    reserved_until: int
    max_seq: int
    watermarks: dict[Stream, int]
    usage: dict[Stream, ClassUsage]
    pins: list[BatchBoundary]


@dataclass(frozen=True, slots=True)
class Removal:
    """Records removed from one class by an ack or an eviction pass."""

    records: list[OutboxRecord]
    count: int
    bytes: int
