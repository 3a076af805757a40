"""Appends of the outbox: checks, encoding, room, and the hand-over to group commit.

Producers' records are checked and encoded on the event loop and queued in the
``GroupCommitQueue``; ``commit.GroupCommit`` assigns their seqs and writes them a
group at a time.  An ``append_many`` may carry a receipt (an opaque key of the
caller's): it rides in the append's ``PendingAppend`` and is written in the
group's WriteBatch with the append's first seq, so the records and their receipt
are durable together or not at all.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Final, NoReturn

from sync.errors import RecordRejected
from sync.outbox.capacity import Capacity
from sync.outbox.database import Database
from sync.outbox.eviction import NEVER_EVICTED
from sync.outbox.ledger import ClassLedger
from sync.outbox.records import (
    KEY_SIZE,
    VALUE_HEADER,
    BlobRef,
    check_receipt,
    encode_header,
)
from sync.outbox.writer import GroupCommitQueue, PendingAppend
from sync.protocol import RAW_STREAMS, Stream
from sync.settings import OutboxSettings

__all__ = ["Appends"]

_RECORD_OVERHEAD: Final = KEY_SIZE + VALUE_HEADER  # bytes a record counts beyond its payload
_METADATA_CLASSES: Final = frozenset(Stream).difference(RAW_STREAMS)


def _valid_expiry(stream: Stream, expires_at: object) -> bool:
    """A deadline is a finite wall-clock time (an int or float), for evictable classes."""
    if stream in NEVER_EVICTED or isinstance(expires_at, bool):
        return False
    if not isinstance(expires_at, int | float):
        return False
    try:
        return math.isfinite(expires_at)
    except OverflowError:  # an int too large for a float
        return False


class Appends:
    """The producers' side: ``append``, ``append_many``, ``append_blob_ref``."""

    def __init__(
        self,
        settings: OutboxSettings,
        clock: Callable[[], float],
        database: Database,
        ledger: ClassLedger,
        capacity: Capacity,
        queue: GroupCommitQueue,
        rejections: Counter[str],
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._database = database
        self._ledger = ledger
        self._capacity = capacity
        self._queue = queue
        self._rejections = rejections

    async def append(
        self, stream: Stream, payload: bytes, *, expires_at: float | None = None
    ) -> int:
        """Store one metadata record; returns its seq once durable per the settings."""
        # The hot path of many concurrent producers: every check inlined; when one
        # fails, the general path (``_submit``) checks again, counts and makes room.
        if type(stream) is not Stream or stream not in _METADATA_CLASSES:
            self._check_metadata_class(stream)
        if type(payload) is not bytes:
            payload = self._as_bytes(payload)
        size = len(payload)
        nbytes = size + _RECORD_OVERHEAD
        settings, queue = self._settings, self._queue
        if (
            expires_at is not None
            or self._database.closed
            or size > settings.max_record_bytes
            or self._ledger.used_bytes + queue.pending_bytes + nbytes > settings.max_bytes
        ):
            return await self._submit(stream, [payload], expires_at)
        value = encode_header(self._clock(), None) + payload
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        queue.submit(PendingAppend(stream, [value], nbytes, future))
        return await future

    async def append_many(
        self,
        stream: Stream,
        payloads: Sequence[bytes],
        *,
        receipt: bytes | str | None = None,
    ) -> list[int]:
        """Store several records atomically (one WriteBatch), seqs in the given order.

        With a ``receipt`` (bytes or str, 1 to ``MAX_RECEIPT_BYTES``; else
        RecordRejected), the records and the receipt (``receipt(key)``: their first
        seq) are durable together or not at all; it needs at least one payload.
        """
        self._check_metadata_class(stream)
        self._database.check_open()  # also when there is nothing to store
        key = None if receipt is None else check_receipt(receipt)
        if type(payloads) is list:  # only read before the first await (no copy)
            data = payloads
        else:  # an iterator is taken once (the type check below must not use it up)
            if isinstance(payloads, bytes | bytearray | str):
                self._reject("wrong_type", "append_many takes a sequence of payloads")
            try:
                iterator = iter(payloads)
            except TypeError:
                self._reject("wrong_type", f"payloads must be iterable: {type(payloads).__name__}")
            data = list(iterator)
        if not set(map(type, data)) <= {bytes}:  # else all bytes: no call per payload
            data = [self._as_bytes(p) for p in data]
        count = len(data)
        if not count:
            if key is not None:
                self._reject("bad_receipt", "a receipt names the first of its records: none given")
            return []
        first = await self._submit(stream, data, None, key)
        return list(range(first, first + count))

    async def append_blob_ref(
        self, stream: Stream, ref: BlobRef, *, expires_at: float | None = None
    ) -> int:
        """Store a reference to a raw blob (raw classes only; the bytes stay in the blob store)."""
        if type(stream) is not Stream or stream not in RAW_STREAMS:
            self._reject("wrong_class", f"blob refs go to raw classes, not {stream!r}")
        if not isinstance(ref, BlobRef):
            self._reject("wrong_type", f"expected a BlobRef, got {type(ref).__name__}")
        return await self._submit(stream, [ref.to_bytes()], expires_at)

    def _check_metadata_class(self, stream: object) -> None:
        if not isinstance(stream, Stream):
            self._reject("wrong_class", f"unknown outbox class {stream!r}")
        if stream in RAW_STREAMS:
            self._reject("wrong_class", f"raw class {stream}: use append_blob_ref, not bytes")

    def _reject(self, reason: str, message: str) -> NoReturn:
        self._rejections[reason] += 1
        raise RecordRejected(message)

    async def _submit(
        self,
        stream: Stream,
        data: list[bytes],
        expires_at: float | None,
        receipt: bytes | None = None,
    ) -> int:
        """Queue ``data`` (non-empty) for the next group commit; returns the first seq.
        ``receipt`` (checked) is written with the records."""
        self._database.check_open()
        if expires_at is not None and not _valid_expiry(stream, expires_at):
            self._reject("wrong_type", f"expires_at not allowed here: {expires_at!r}")
        limit = self._settings.max_record_bytes
        payload_bytes = sum(map(len, data))
        if payload_bytes > limit:  # else no single record can be over the limit
            largest = max(map(len, data))
            if largest > limit:
                self._reject("oversize", f"record of {largest} bytes exceeds {limit}")
        header = encode_header(self._clock(), expires_at)
        values = list(map(header.__add__, data))  # a C-level loop
        nbytes = payload_bytes + _RECORD_OVERHEAD * len(values)
        if self._capacity.overflow(nbytes) > 0:  # room is the common case: no eviction planning
            await self._capacity.make_room(nbytes)
            self._database.check_open()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.submit(PendingAppend(stream, values, nbytes, future, receipt))
        return await future

    def _as_bytes(self, payload: object) -> bytes:
        if type(payload) is bytes:
            return payload
        if not isinstance(payload, bytes | bytearray | memoryview):
            self._reject("wrong_type", f"payload must be bytes, not {type(payload).__name__}")
        return bytes(payload)
