"""The RocksDB edge of the outbox: blocking calls into rocksdict, nothing asynchronous.

Mutating methods run one at a time under the outbox's write lock: a group's
``write_records`` on the event loop, then ``sync_wal``, acks and eviction on the
writer thread; reads may run on the event loop (RocksDB is thread-safe).  Column
families: one per class (``Stream.value``) plus ``meta`` (key layout in ``records``).
Counters, watermarks and receipts are written in the same WriteBatch as the
records they describe, so after any crash they agree with the data.
"""

from __future__ import annotations

import gc
import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from rocksdict import Cache, ColumnFamily, Rdict, WriteBatch, WriteOptions

from sync.errors import OutboxCorrupted, OutboxDiskFull, OutboxStorageError, SyncError
from sync.outbox.eviction import ClassUsage
from sync.outbox.options import direct_io_at, outbox_options
from sync.outbox.reader import ReadResult, Walked, read_bulk, read_each
from sync.outbox.records import (
    COUNT,
    MAX_SEQ,
    META_CF,
    RECEIPT_PREFIX,
    RESERVED_KEY,
    U64,
    BatchBoundary,
    LoadedState,
    Removal,
    ack_key,
    count_key,
    decode_key,
    decode_value,
    encode_key,
    pin_key,
    pin_prefix,
)
from sync.protocol import Stream

__all__ = ["LoadedState", "OutboxStore", "Removal", "classify_storage_error"]

log = logging.getLogger(__name__)

_UNSYNCED: Final = WriteOptions()  # sync=False: durability comes from sync_wal()


def classify_storage_error(exc: BaseException) -> SyncError:
    """Map a rocksdict exception (plain ``Exception`` with RocksDB's status text) to ours."""
    message = str(exc)
    if "No space left" in message or "ENOSPC" in message:
        return OutboxDiskFull(f"outbox disk full: {message}")
    if message.startswith("Corruption") or "Corruption:" in message:
        return OutboxCorrupted(f"outbox database corrupted: {message}")
    return OutboxStorageError(f"outbox storage error: {message}")


class OutboxStore:
    """An open outbox database.  Raises rocksdict's exceptions from ``__init__``."""

    def __init__(self, path: Path, memory_budget: int) -> None:
        self.path = path
        cache = Cache(memory_budget // 4)
        names = [s.value for s in Stream] + [META_CF]
        if (path / "CURRENT").exists():
            names += [n for n in Rdict.list_cf(str(path)) if n not in names and n != "default"]
        self._db: Rdict | None = Rdict(
            str(path),
            outbox_options(memory_budget, cache, direct_io=direct_io_at(path)),
            column_families={n: outbox_options(memory_budget, cache) for n in names},
        )
        self._cfs = {s: self._db.get_column_family(s.value) for s in Stream}
        self._handles = {s: self._db.get_column_family_handle(s.value) for s in Stream}
        self._meta = self._db.get_column_family(META_CF)
        self._meta_handle = self._db.get_column_family_handle(META_CF)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close and release the lock even when RocksDB is in an error state."""
        db, self._db = self._db, None
        self._cfs.clear()
        self._handles.clear()
        self._meta = self._meta_handle = None  # type: ignore[assignment]
        if db is None:
            return
        try:
            db.close()
        except Exception as exc:  # noqa: BLE001 - a failed close must still release the handle
            log.warning("outbox close reported an error", extra={"error": str(exc)})
        del db
        gc.collect()  # rocksdict releases the LOCK file when the object is dropped

    def load_state(self) -> LoadedState:
        """Read counters, watermarks, pins and the highest seq; ValueError on garbage."""
        meta = self._meta
        raw_reserved = meta.get(RESERVED_KEY)
        reserved = U64.unpack(raw_reserved)[0] if raw_reserved is not None else 1
        watermarks: dict[Stream, int] = {}
        usage: dict[Stream, ClassUsage] = {}
        max_seq = 0
        for stream in Stream:
            raw_ack = meta.get(ack_key(stream))
            watermarks[stream] = U64.unpack(raw_ack)[0] if raw_ack is not None else 0
            raw_count = meta.get(count_key(stream))
            records, nbytes = COUNT.unpack(raw_count) if raw_count is not None else (0, 0)
            usage[stream] = self._checked_count(stream, watermarks[stream], records, nbytes)
            for seq, value in (self._first(stream), self._last(stream)):
                if seq is not None and value is not None:
                    decode_value(value)  # touches the first and last blocks: checksums
                    max_seq = max(max_seq, seq)
        pins = [pin for stream in Stream for pin in self._load_pins(stream)]
        return LoadedState(reserved, max_seq, watermarks, usage, pins)

    def _checked_count(
        self, stream: Stream, watermark: int, records: int, nbytes: int
    ) -> ClassUsage:
        """The class's persisted count, unless one seek shows it is wrong: a count of
        records over an empty class (nothing above the watermark) would have the sync
        engine wait for records that are not there, for ever; a zero count over records
        would let eviction and the cap ignore them.  Either is counted again here and
        logged (written back by the class's next write)."""
        held = next(self.scan(stream, watermark + 1, MAX_SEQ), None) is not None
        if held == (records > 0):
            return ClassUsage(records, nbytes)
        counted = ClassUsage(0, 0)
        for key, value in self.scan(stream, watermark + 1, MAX_SEQ):
            counted = ClassUsage(counted.records + 1, counted.bytes + len(key) + len(value))
        log.error(
            "outbox count of %s was %d records (%d B) but the class holds %d (%d B): counted again",
            stream.value,
            records,
            nbytes,
            counted.records,
            counted.bytes,
        )
        return counted

    def _first(self, stream: Stream) -> tuple[int | None, bytes | None]:
        it = self._cfs[stream].iter()
        it.seek_to_first()
        if not it.valid():
            it.status()  # raises when the iterator stopped on an error
            return None, None
        return decode_key(it.key()), it.value()

    def _last(self, stream: Stream) -> tuple[int | None, bytes | None]:
        it = self._cfs[stream].iter()
        it.seek_to_last()
        if not it.valid():
            it.status()  # raises when the iterator stopped on an error
            return None, None
        return decode_key(it.key()), it.value()

    def _load_pins(self, stream: Stream) -> Iterator[BatchBoundary]:
        prefix = pin_prefix(stream)
        for key, value in self._meta_under(prefix):
            last = U64.unpack_from(value)[0]
            yield BatchBoundary(stream, decode_key(key[len(prefix) :]), last, value[8:].decode())

    def _meta_under(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The ``meta`` entries whose key starts with ``prefix``, in key order."""
        it = self._meta.iter()
        it.seek(prefix)
        while it.valid():
            key: bytes = it.key()
            if not key.startswith(prefix):
                break
            yield key, it.value()
            it.next()
        it.status()  # raises when the walk stopped on an error, not at the end

    def disk_bytes(self) -> int:
        total = 0
        with os.scandir(self.path) as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue  # removed by a compaction while we looked
        return total

    # ------------------------------------------------------------------ writes

    def handle(self, stream: Stream) -> ColumnFamily:
        return self._handles[stream]

    def _db_checked(self) -> Rdict:
        if self._db is None:
            raise OutboxStorageError("outbox database is not open")
        return self._db

    def commit(self, batch: WriteBatch, sync: bool) -> None:
        """Apply ``batch``; with ``sync``, return once it is fsynced (``sync_wal``).

        The write itself goes to the WAL in the page cache (``write`` holds the GIL
        in rocksdict for its whole length, docs/OUTBOX.md), the fsync is
        ``flush_wal(True)``, which releases it: other threads, the event loop among
        them, run while the disk works.
        """
        try:
            self._db_checked().write(batch, _UNSYNCED)
        except SyncError:
            raise
        except Exception as exc:
            raise classify_storage_error(exc) from exc
        if sync:
            self.sync_wal()

    def sync_wal(self) -> None:
        """fsync every write applied so far (RocksDB ``FlushWAL(sync=true)``, which
        syncs the WAL files: RocksDB's documented alternative to ``WriteOptions.sync``,
        except that the data is visible to readers before the fsync, so
        ``Outbox.read`` hides seqs above the committed one).  Blocks without the GIL:
        run it on the writer thread.
        """
        try:
            self._db_checked().flush_wal(True)
        except SyncError:
            raise
        except Exception as exc:
            raise classify_storage_error(exc) from exc

    def background_work(self) -> bool:
        """True while RocksDB flushes or compacts, or has a memtable waiting to be
        flushed (three in-memory properties: cheap).  With atomic flush every
        column family's memtable is switched together, so ``meta`` (written by every
        group) stands for all of them."""
        db = self._db_checked()
        return bool(
            db.property_int_value("rocksdb.num-running-flushes")
            or db.property_int_value("rocksdb.num-running-compactions")
            or self._meta.property_int_value("rocksdb.num-immutable-mem-table")
        )

    def write_records(
        self,
        runs: Sequence[tuple[Stream, int, Sequence[bytes]]],
        counts: dict[Stream, ClassUsage],
        reserved_until: int | None,
        receipts: Sequence[tuple[bytes, int]] = (),
    ) -> None:
        """Put runs of encoded values (class, first seq, values), the classes' new
        totals and the appends' receipts (key, first seq) in one WriteBatch; seqs
        within a run are consecutive.  Not fsynced: durable after the next
        ``sync_wal``."""
        batch = WriteBatch(raw_mode=True)
        put, keys_of = batch.put, U64.pack
        for stream, first_seq, values in runs:
            batch.set_default_column_family(self._handles[stream])
            # a C-level loop: no Python bytecode per record
            deque(map(put, map(keys_of, range(first_seq, first_seq + len(values))), values), 0)
        batch.set_default_column_family(None)
        for stream, usage in counts.items():
            batch.put(count_key(stream), COUNT.pack(usage.records, usage.bytes), self._meta_handle)
        if reserved_until is not None:
            batch.put(RESERVED_KEY, U64.pack(reserved_until), self._meta_handle)
        for key, first_seq in receipts:
            batch.put(RECEIPT_PREFIX + key, U64.pack(first_seq), self._meta_handle)
        self.commit(batch, sync=False)

    def reserve_seqs(self, reserved_until: int) -> None:
        batch = WriteBatch(raw_mode=True)
        batch.put(RESERVED_KEY, U64.pack(reserved_until), self._meta_handle)
        self.commit(batch, sync=True)

    def move_records(
        self, stream: Stream, records: Sequence[tuple[bytes, bytes]], shift: int
    ) -> None:
        """Give ``records`` (key, value) the seqs ``seq + shift``, in one synced WriteBatch:
        after a crash each record is under its old seq or its new one, never both."""
        batch = WriteBatch(raw_mode=True)
        handle = self._handles[stream]
        for key, value in records:
            batch.put(encode_key(decode_key(key) + shift), value, handle)
            batch.delete(key, handle)
        self.commit(batch, sync=True)

    def receipt(self, key: bytes) -> int | None:
        """The first seq stored with receipt ``key``, or None."""
        try:
            raw = self._meta.get(RECEIPT_PREFIX + key)
        except Exception as exc:
            raise classify_storage_error(exc) from exc
        return None if raw is None else int(U64.unpack(raw)[0])

    def receipts(self, prefix: bytes) -> dict[bytes, int]:
        """Every receipt whose key starts with ``prefix``: key -> first seq."""
        skip = len(RECEIPT_PREFIX)
        try:
            return {
                key[skip:]: U64.unpack(value)[0]
                for key, value in self._meta_under(RECEIPT_PREFIX + prefix)
            }
        except Exception as exc:
            raise classify_storage_error(exc) from exc

    def drop_receipt(self, key: bytes, sync: bool) -> None:
        batch = WriteBatch(raw_mode=True)
        batch.delete(RECEIPT_PREFIX + key, self._meta_handle)
        self.commit(batch, sync)

    def put_pin(self, pin: BatchBoundary) -> None:
        batch = WriteBatch(raw_mode=True)
        value = U64.pack(pin.last_seq) + pin.batch_id.encode()
        batch.put(pin_key(pin.stream, pin.first_seq), value, self._meta_handle)
        self.commit(batch, sync=True)

    def ack(
        self,
        stream: Stream,
        watermark: int,
        up_to: int,
        current: ClassUsage,
        drop_pins: Sequence[BatchBoundary],
        sync: bool,
        known: Walked | None = None,
    ) -> Removal:
        """Range-delete ``(watermark, up_to]`` and persist the new watermark.

        ``known`` (from reads since the last removal, ``known.after_seq == watermark``,
        ``known.last_seq <= up_to``) already counts the start of the range: only the
        rest is scanned to count what is removed.
        """
        count = nbytes = 0
        start = watermark + 1
        if known is not None:
            count, nbytes, start = known.records, known.bytes, known.last_seq + 1
        for key, value in self.scan(stream, start, up_to):
            count += 1
            nbytes += len(key) + len(value)
        batch = WriteBatch(raw_mode=True)
        batch.delete_range(encode_key(watermark + 1), encode_key(up_to + 1), self._handles[stream])
        batch.put(ack_key(stream), U64.pack(up_to), self._meta_handle)
        self.put_count(batch, stream, current, count, nbytes)
        for pin in drop_pins:
            batch.delete(pin_key(pin.stream, pin.first_seq), self._meta_handle)
        self.commit(batch, sync)
        return Removal([], count, nbytes)

    def put_count(
        self, batch: WriteBatch, stream: Stream, current: ClassUsage, count: int, nbytes: int
    ) -> None:
        left = ClassUsage(max(0, current.records - count), max(0, current.bytes - nbytes))
        batch.put(count_key(stream), COUNT.pack(left.records, left.bytes), self._meta_handle)

    # ------------------------------------------------------------------ reads

    def _family(self, stream: Stream) -> Rdict:
        """The column family of ``stream``; a typed error while a reopen has failed."""
        cf = self._cfs.get(stream)
        if cf is None:
            raise OutboxStorageError("outbox database is not open (a reopen failed)")
        return cf

    def scan(self, stream: Stream, first_seq: int, last_seq: int) -> Iterator[tuple[bytes, bytes]]:
        """Records with ``first_seq <= seq <= last_seq`` in order (seek, then walk).

        rocksdict 0.3 encodes ReadOptions bounds in its non-raw format, so the
        bounds are checked here instead (big-endian keys compare as seqs).
        """
        if first_seq > last_seq:
            return
        end = encode_key(last_seq)
        cf = self._family(stream)
        try:
            it = cf.iter()
            it.seek(encode_key(first_seq))
            while it.valid():
                key: bytes = it.key()
                if key > end:
                    return
                yield key, it.value()
                it.next()
            it.status()  # an iterator stops on an error; status() raises it
        except SyncError:
            raise
        except Exception as exc:
            raise classify_storage_error(exc) from exc

    def read(
        self,
        stream: Stream,
        after_seq: int,
        *,
        max_records: int,
        max_bytes: int,
        now: float,
        ttl: float | None,
    ) -> ReadResult:
        """Records after ``after_seq`` in seq order; at least one if any (even if large).

        Also says what was walked, see ``reader``.
        """
        cf = self._family(stream)
        try:
            if ttl is None:
                result = read_bulk(
                    cf, stream, after_seq, max_records=max_records, max_bytes=max_bytes, now=now
                )
                if result is not None:
                    return result
            return read_each(
                cf,
                stream,
                after_seq,
                max_records=max_records,
                max_bytes=max_bytes,
                now=now,
                ttl=ttl,
            )
        except SyncError:
            raise
        except Exception as exc:
            raise classify_storage_error(exc) from exc

    def oldest_created_at(self, stream: Stream, after_seq: int) -> float | None:
        for _, value in self.scan(stream, after_seq + 1, MAX_SEQ):
            return decode_value(value)[0]
        return None
