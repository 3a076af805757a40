"""Reading a class of the outbox in seq order: the hot loop of the drain (no asyncio).

A read walks a RocksDB iterator from a seq, bounded by a record count and a
byte budget (always at least one record).  Two implementations, same results:

* ``read_bulk`` - the common case (no TTL on the class): a tight loop over
  rocksdict's ``items()`` (one call into rocksdict per record instead of four)
  only collects keys and values, then whole lists are decoded with a few C-level
  calls (all seqs in one ``struct.unpack``, the headers joined and checked with
  strided byte compares, all ``created_at`` in one unpack, payload slices, record
  tuples), so there is almost no Python bytecode per record.  It gives up
  (returns None) when a record's own deadline has passed, since expired records
  must be skipped;
* ``read_each`` - one record at a time, skipping expired records.

Both name the seq of a value that does not have our layout (``OutboxCorrupted``)
and make sure an iterator that ran out did not stop on an error (rocksdict
iterators stop instead of raising; ``items()`` hides the iterator, so the end is
checked with a seek of a plain iterator).  Both read without filling the block
cache: a drained record is read once.  Both report what they walked
(``Walked``), so that an ack of exactly that range needs no second scan to count
what it removes.
"""

from __future__ import annotations

import gc
import struct
from collections.abc import Iterator, Sequence
from itertools import repeat
from operator import itemgetter
from typing import Final, NamedTuple, NoReturn, cast

from rocksdict import Rdict, ReadOptions

from sync.errors import OutboxCorrupted
from sync.outbox.records import (
    FORMAT_VERSION,
    HEADER,
    KEY_SIZE,
    VALUE_HEADER,
    OutboxRecord,
    decode_value,
    encode_header,
    encode_key,
)
from sync.protocol import Stream

__all__ = ["ReadResult", "Walked", "read_bulk", "read_each"]

_KEY: Final = struct.Struct(">Q")
_head_of = itemgetter(slice(VALUE_HEADER))
_payload_of = itemgetter(slice(VALUE_HEADER, None))
_new_tuple = tuple.__new__
# HEADER is ">Bdd" (version, created_at, expires_at): the formats below unpack all
# created_at / expires_at of ``count`` joined headers in one call.
_EXPIRES_AT: Final = VALUE_HEADER - 8  # offset of expires_at in a header
_VERSION_BYTE: Final = bytes([FORMAT_VERSION])
_NO_DEADLINE: Final = tuple(bytes([b]) for b in encode_header(0.0, None)[_EXPIRES_AT:])
"""The bytes of ``expires_at`` when a record has no deadline (NaN), one by one."""
_EXPIRES_AT_FORMAT: Final = f"{_EXPIRES_AT}xd"  # one header: only expires_at
_CREATED_AT_FORMAT: Final = f"xd{VALUE_HEADER - 9}x"  # one header: only created_at


def _read_options() -> ReadOptions:
    opts = ReadOptions()
    # a drained record is read once: keep the cache for the rest (the stub lacks the flag)
    opts.fill_cache(False)  # type: ignore[call-arg]
    return opts


_READ: Final = _read_options()


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


def _check_end(cf: Rdict, last_key: bytes | None, start: bytes) -> None:
    """``items()`` stops on an error as if the class ended: seek past what was read
    with a plain iterator, whose ``status()`` raises the error if there is one."""
    it = cf.iter(_READ)
    it.seek(start if last_key is None else last_key + b"\x00")
    if not it.valid():
        it.status()


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
    start = encode_key(after_seq + 1)
    items = cast("Iterator[tuple[bytes, bytes]]", cf.items(from_key=start, read_opt=_READ))
    for key, value in items:
        size = len(value)
        if count and total + size > max_bytes:
            break
        add_value(value)
        add_key(key)
        total += size
        count += 1
        if count >= max_records:
            break
    else:
        _check_end(cf, keys[-1] if keys else None, start)
    if not count:
        return ReadResult([], Walked(after_seq, after_seq, 0, 0))
    joined_keys = b"".join(keys)
    heads = b"".join(map(_head_of, values))
    if len(joined_keys) != KEY_SIZE * count or len(heads) != VALUE_HEADER * count:
        _find_bad(keys, values)
    if heads[::VALUE_HEADER] != _VERSION_BYTE * count:
        _find_bad(keys, values)
    if any(
        heads[offset::VALUE_HEADER] != byte * count
        for offset, byte in enumerate(_NO_DEADLINE, start=_EXPIRES_AT)
    ):  # some record has a deadline: check them all
        expires = struct.unpack(">" + _EXPIRES_AT_FORMAT * count, heads)
        if any(map(now.__ge__, expires)):  # NaN (no deadline): False
            return None
    seqs = struct.unpack(f">{count}Q", joined_keys)
    created = struct.unpack(">" + _CREATED_AT_FORMAT * count, heads)
    fields = zip(repeat(stream), seqs, map(_payload_of, values), created)
    # Building ~10^3 tuples triggers the cyclic GC about once per 700, and each pass
    # walks the young tuples (a large share of this step); records hold no cycles.
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
    it = cf.iter(_READ)
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
