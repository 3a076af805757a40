"""Eviction on disk: carrying out the policy's steps against the RocksDB store.

Blocking functions for the outbox's writer thread.  Each one scans a class from
its oldest record, deletes what it selected and writes the class's new totals in
the same WriteBatch (so counters never drift from the data).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rocksdict import WriteBatch

from sync.outbox.eviction import ClassUsage, is_expired
from sync.outbox.records import (
    MAX_SEQ,
    OutboxRecord,
    Removal,
    decode_record,
    encode_key,
    encode_value,
)
from sync.outbox.store import OutboxStore
from sync.protocol import Stream

__all__ = ["coalesce_oldest", "delete_records", "drop_expired", "drop_oldest"]


def drop_oldest(
    store: OutboxStore, stream: Stream, after_seq: int, need: int, current: ClassUsage, sync: bool
) -> Removal:
    """Delete the oldest records above ``after_seq`` until ``need`` bytes are freed."""
    records: list[OutboxRecord] = []
    nbytes = 0
    for key, value in store.scan(stream, after_seq + 1, MAX_SEQ):
        if nbytes >= need:
            break
        records.append(decode_record(stream, key, value)[0])
        nbytes += len(key) + len(value)
    if not records:
        return Removal([], 0, 0)
    batch = WriteBatch(raw_mode=True)
    first, last = records[0].seq, records[-1].seq
    batch.delete_range(encode_key(first), encode_key(last + 1), store.handle(stream))
    store.put_count(batch, stream, current, len(records), nbytes)
    store.commit(batch, sync)
    return Removal(records, len(records), nbytes)


def drop_expired(
    store: OutboxStore,
    stream: Stream,
    after_seq: int,
    *,
    now: float,
    ttl: float | None,
    need: int | None,
    stop_at_fresh: bool,
    current: ClassUsage,
    sync: bool,
    scan_limit: int = 200_000,
) -> Removal:
    """Delete expired records (own deadline or class TTL), oldest first.

    ``stop_at_fresh`` ends the scan at the first unexpired record without a
    deadline of its own (records are in creation order, so TTL expiry is a prefix).
    """
    records: list[OutboxRecord] = []
    nbytes = 0
    for scanned, (key, value) in enumerate(store.scan(stream, after_seq + 1, MAX_SEQ)):
        if scanned >= scan_limit or (need is not None and nbytes >= need):
            break
        record, expires_at = decode_record(stream, key, value)
        if is_expired(record.created_at, expires_at, ttl, now):
            records.append(record)
            nbytes += len(key) + len(value)
        elif stop_at_fresh and expires_at is None:
            break
    if records:
        delete_records(store, stream, records, current, nbytes, sync)
    return Removal(records, len(records), nbytes)


def delete_records(
    store: OutboxStore,
    stream: Stream,
    records: Sequence[OutboxRecord],
    current: ClassUsage,
    nbytes: int,
    sync: bool,
    replacement: tuple[int, bytes] | None = None,
) -> None:
    """Delete single records, optionally putting one coalesced record in their place."""
    batch = WriteBatch(raw_mode=True)
    handle = store.handle(stream)
    for record in records:
        batch.delete(encode_key(record.seq), handle)
    count = len(records)
    if replacement is not None:
        seq, value = replacement
        batch.put(encode_key(seq), value, handle)
        count -= 1
        nbytes -= len(encode_key(seq)) + len(value)
    store.put_count(batch, stream, current, count, nbytes)
    store.commit(batch, sync)


def coalesce_oldest(
    store: OutboxStore,
    stream: Stream,
    after_seq: int,
    need: int,
    current: ClassUsage,
    coalesce: Callable[[Sequence[bytes]], bytes] | None,
    sync: bool,
) -> tuple[Removal, bool]:
    """Fold the oldest records into one (at the last one's seq); drop them without a folder.

    Returns the removal (net bytes freed) and whether it was coalesced.
    """
    taken: list[OutboxRecord] = []
    gathered = 0
    for key, value in store.scan(stream, after_seq + 1, MAX_SEQ):
        if gathered >= need and len(taken) >= 2:
            break
        taken.append(decode_record(stream, key, value)[0])
        gathered += len(key) + len(value)
    if not taken:
        return Removal([], 0, 0), False
    if coalesce is not None and len(taken) >= 2:
        merged = encode_value(coalesce([r.payload for r in taken]), taken[0].created_at, None)
        freed = gathered - (len(encode_key(0)) + len(merged))
        if freed > 0:
            delete_records(
                store, stream, taken, current, gathered, sync, replacement=(taken[-1].seq, merged)
            )
            return Removal(taken, len(taken) - 1, freed), True
    delete_records(store, stream, taken, current, gathered, sync)
    return Removal(taken, len(taken), gathered), False
