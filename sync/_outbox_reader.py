"""Reading a class of the outbox in seq order: the hot loop of the drain (no asyncio).

A read walks a RocksDB iterator from a seq, bounded by a record count and a
byte budget (always at least one record).  Two implementations, same results:

* ``read_bulk`` - the common case (no TTL on the class): a tight loop only
  collects keys and values, then whole lists are decoded with C-level ``map``
  calls (seq, header, payload slice, record tuple), so there is almost no Python
  bytecode per record.  It gives up (returns None) when a record's own deadline
  has passed, since expired records must be skipped;
* ``read_each`` - one record at a time, skipping expired records.

Both name the seq of a value that does not have our layout (``OutboxCorrupted``)
and call ``status()`` when the iterator ends, since rocksdict iterators stop on an
error instead of raising it.  Both report what they walked (``Walked``), so that
an ack of exactly that range needs no second scan to count what it removes.
"""

from __future__ import annotations

import gc
import struct
from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter
from typing import Final, NamedTuple, NoReturn

from rocksdict import Rdict

from sync._outbox_records import (
    FORMAT_VERSION,
    HEADER,
    KEY_SIZE,
    VALUE_HEADER,
    OutboxRecord,
    decode_value,
    encode_key,
)
from sync.errors import OutboxCorrupted
from sync.protocol import Stream

__all__ = ["ReadResult", "Walked", "read_bulk", "read_each"]

_KEY: Final = struct.Struct(">Q")
_first = itemgetter(0)
_version_of = _first
_created_at_of = itemgetter(1)
_expires_at_of = itemgetter(2)
_payload_of = itemgetter(slice(VALUE_HEADER, None))
_new_tuple = tuple.__new__


class Walked(NamedTuple):
    """What a read walked: ``records`` records of ``bytes`` (key + value) with
    ``after_seq < seq <= last_seq``, expired ones included: every record in that range."""

    after_seq: int
    last_seq: int
    records: int
    bytes: int


class ReadResult(NamedTuple):
    records: list[OutboxRecord]
    walked: Walked


def _bad_value(seq: int, value: bytes) -> NoReturn:
    """Raise OutboxCorrupted naming the seq whose value does not have our layout."""
    try:
        decode_value(value)
    except ValueError as exc:
        raise OutboxCorrupted(f"seq {seq}: {exc}") from exc
    raise OutboxCorrupted(f"seq {seq}: undecodable outbox value")


def _bad_key(key: bytes) -> OutboxCorrupted:
    return OutboxCorrupted(f"key {key!r} is not an 8-byte seq")


def _find_bad(keys: Sequence[bytes], values: Sequence[bytes]) -> NoReturn:
    """The slow path of a failed bulk decode: find and name the first bad record."""
    for key, value in zip(keys, values, strict=True):
        if len(key) != KEY_SIZE:
            raise _bad_key(key)
        seq = _KEY.unpack(key)[0]
        if len(value) < VALUE_HEADER or value[0] != FORMAT_VERSION:
            _bad_value(seq, value)
    raise OutboxCorrupted("undecodable outbox record")  # not reached: the caller saw one


def read_bulk(
    cf: Rdict,
    stream: Stream,
    after_seq: int,
    *,
    max_records: int,
    max_bytes: int,
    now: float,
) -> ReadResult | None:
    """Records after ``after_seq`` of a class without TTL; None if one's deadline passed."""
    keys: list[bytes] = []
    values: list[bytes] = []
    add_key, add_value = keys.append, values.append
    count = total = 0
    it = cf.iter()
    it.seek(encode_key(after_seq + 1))
    valid, key_at, value_at, step = it.valid, it.key, it.value, it.next
    while valid():
        value: bytes = value_at()
        size = len(value)
        if count and total + size > max_bytes:
            break
        add_value(value)
        add_key(key_at())
        total += size
        count += 1
        if count >= max_records:
            break
        step()
    else:
        it.status()  # an iterator stops on an error; status() raises it
    if not count:
        return ReadResult([], Walked(after_seq, after_seq, 0, 0))
    joined_keys = b"".join(keys)
    if len(joined_keys) != KEY_SIZE * count:
        _find_bad(keys, values)
    try:
        headers = list(map(HEADER.unpack_from, values))
    except struct.error:
        _find_bad(keys, values)
    if any(map(FORMAT_VERSION.__ne__, map(_version_of, headers))):
        _find_bad(keys, values)
    if any(map(now.__ge__, map(_expires_at_of, headers))):  # NaN (no deadline): False
        return None
    seqs: list[int] = list(map(_first, _KEY.iter_unpack(joined_keys)))
    fields = zip(repeat(stream), seqs, map(_payload_of, values), map(_created_at_of, headers))
    # Building ~10^3 tuples triggers the cyclic GC about once per 700, and each pass
    # walks the young tuples (~40% of this step, measured); records hold no cycles.
    collecting = gc.isenabled()
    gc.disable()
    try:
        records: list[OutboxRecord] = list(map(_new_tuple, repeat(OutboxRecord), fields))
    finally:
        if collecting:
            gc.enable()
    return ReadResult(records, Walked(after_seq, seqs[-1], count, total + KEY_SIZE * count))


def read_each(
    cf: Rdict,
    stream: Stream,
    after_seq: int,
    *,
    max_records: int,
    max_bytes: int,
    now: float,
    ttl: float | None,
) -> ReadResult:
    """Records after ``after_seq``, one at a time, skipping expired ones."""
    records: list[OutboxRecord] = []
    append = records.append
    unpack_header, unpack_key = HEADER.unpack_from, _KEY.unpack
    total = walked = walked_bytes = 0
    last_seq = after_seq
    it = cf.iter()
    it.seek(encode_key(after_seq + 1))
    valid, key_at, value_at, step = it.valid, it.key, it.value, it.next
    while valid():
        value: bytes = value_at()
        size = len(value)
        if records and (len(records) >= max_records or total + size > max_bytes):
            break
        key: bytes = key_at()
        try:
            (seq,) = unpack_key(key)
        except struct.error as exc:
            raise _bad_key(key) from exc
        try:
            version, created_at, expires_at = unpack_header(value)
        except struct.error:
            _bad_value(seq, value)
        if version != FORMAT_VERSION:
            _bad_value(seq, value)
        walked += 1
        walked_bytes += KEY_SIZE + size
        last_seq = seq
        # a NaN deadline (none) compares False, so no separate None check
        if not (expires_at <= now or (ttl is not None and created_at + ttl <= now)):
            append(OutboxRecord(stream, seq, value[VALUE_HEADER:], created_at))
            total += size
        step()
    else:
        it.status()  # an iterator stops on an error; status() raises it
    return ReadResult(records, Walked(after_seq, last_seq, walked, walked_bytes))
