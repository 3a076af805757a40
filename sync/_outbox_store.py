"""The RocksDB edge of the outbox: blocking calls into rocksdict, nothing asynchronous.

Mutating methods run one at a time under the outbox's write lock: a group's
``write_records`` on the event loop, then ``sync_wal``, acks and eviction on the
writer thread; reads may run on the event loop (RocksDB is thread-safe).  Column
families: one per class (``Stream.value``) plus ``meta``, which holds, under these
keys:

* ``seq/reserved``        - 8 bytes: every seq ever handed out is below it;
* ``ack/<class>``         - 8 bytes: acknowledged watermark of the class;
* ``count/<class>``       - 16 bytes: live records and bytes of the class;
* ``pin/<class>/<first>`` - 8 bytes last seq + batch id (utf-8);
* ``receipt/<key>``       - 8 bytes: the first seq of the append that carried
  the receipt ``<key>`` (an opaque caller's key, e.g. a spool file's identity).

Counters, watermarks and receipts are written in the same WriteBatch as the
records they describe, so after any crash they agree with the data.
"""

from __future__ import annotations

import gc
import logging
import mmap
import os
import struct
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from rocksdict import (
    BlockBasedOptions,
    Cache,
    ColumnFamily,
    DBCompressionType,
    DBRecoveryMode,
    Options,
    Rdict,
    WriteBatch,
    WriteOptions,
)

from sync._outbox_eviction import ClassUsage
from sync._outbox_reader import ReadResult, Walked, read_bulk, read_each
from sync._outbox_records import (
    MAX_SEQ,
    BatchBoundary,
    OutboxRecord,
    decode_key,
    decode_value,
    encode_key,
)
from sync.errors import OutboxCorrupted, OutboxDiskFull, OutboxStorageError, SyncError
from sync.protocol import Stream

__all__ = [
    "META_CF",
    "LoadedState",
    "OutboxStore",
    "Removal",
    "classify_storage_error",
    "db_options",
]

log = logging.getLogger(__name__)

META_CF: Final = "meta"
_U64: Final = struct.Struct(">Q")
_COUNT: Final = struct.Struct(">QQ")
_RESERVED_KEY: Final = b"seq/reserved"
_RECEIPT_PREFIX: Final = b"receipt/"
_UNSYNCED: Final = WriteOptions()  # sync=False: durability comes from sync_wal()


def _ack_key(stream: Stream) -> bytes:
    return b"ack/" + stream.value.encode()


def _count_key(stream: Stream) -> bytes:
    return b"count/" + stream.value.encode()


def _pin_prefix(stream: Stream) -> bytes:
    return b"pin/" + stream.value.encode() + b"/"


def _pin_key(stream: Stream, first_seq: int) -> bytes:
    return _pin_prefix(stream) + encode_key(first_seq)


def classify_storage_error(exc: BaseException) -> SyncError:
    """Map a rocksdict exception (plain ``Exception`` with RocksDB's status text) to ours."""
    message = str(exc)
    if "No space left" in message or "ENOSPC" in message:
        return OutboxDiskFull(f"outbox disk full: {message}")
    if message.startswith("Corruption") or "Corruption:" in message:
        return OutboxCorrupted(f"outbox database corrupted: {message}")
    return OutboxStorageError(f"outbox storage error: {message}")


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


_MEMTABLES_PER_WAL_BUDGET: Final = 8  # max_total_wal_size / write_buffer_size
_RECYCLED_WALS: Final = _MEMTABLES_PER_WAL_BUDGET * 3 // 2  # WALs live at a forced flush


def direct_io_works(directory: Path) -> bool:
    """Whether ``O_DIRECT`` writes work on the filesystem of ``directory`` (ext4, xfs and
    f2fs: yes; some tmpfs and FUSE mounts: no).  Probed with one aligned 4 KiB write,
    because RocksDB would only find out at its first flush, and fail it."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    probe = directory / f".direct-io-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | flag, 0o600)
        try:
            with mmap.mmap(-1, 4096) as aligned:  # page-aligned, as O_DIRECT wants
                os.write(fd, aligned)
        finally:
            os.close(fd)
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)
    return True


def _options(memory_budget: int, cache: Cache, *, direct_io: bool = False) -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.set_paranoid_checks(True)
    opts.set_max_open_files(-1)  # open (and check) every table file at start
    opts.set_keep_log_file_num(2)
    opts.set_max_log_file_size(1 << 20)
    opts.set_wal_recovery_mode(DBRecoveryMode.point_in_time())
    # Reuse obsolete WAL files instead of creating new ones: overwriting blocks that
    # are already allocated lets each synced write's fdatasync skip the file-size /
    # extent metadata (a journal commit on ext4), as SQLite does by reusing its WAL.
    # Recycled records carry their log number, so recovery stops at stale tails;
    # RocksDB >= 9.1 keeps recycling on under point-in-time recovery (the bundled
    # 9.8 does; it prints ``Options.recycle_log_file_num`` in the LOG). Enough files
    # are kept for every WAL still live when ``max_total_wal_size`` forces a flush.
    opts.set_recycle_log_file_num(_RECYCLED_WALS)
    # Every group also updates the class counters in ``meta``. Without atomic flush a
    # WAL file stays live until that small column family is flushed too (forced only
    # at ``max_total_wal_size``), so fewer files are free to recycle: 0.15 ms more per
    # synced batch of 256 in an A/B on this VM (docs/OUTBOX.md). Flushing all column
    # families together frees each WAL as soon as its memtables are flushed.
    opts.set_atomic_flush(True)
    opts.set_write_buffer_size(memory_budget // _MEMTABLES_PER_WAL_BUDGET)
    opts.set_max_write_buffer_number(2)
    opts.set_db_write_buffer_size(memory_budget // 2)
    opts.set_max_total_wal_size(memory_budget)
    opts.set_max_background_jobs(2)
    opts.set_compression_type(DBCompressionType.lz4())
    # Flushes and compactions write their SST files around the page cache: then the
    # WAL fsync of a group no longer waits behind the writeback of a whole memtable
    # (docs/OUTBOX.md, "Flushes around the page cache"). Reads still use the cache.
    opts.set_use_direct_io_for_flush_and_compaction(direct_io)
    table = BlockBasedOptions()
    table.set_block_cache(cache)
    opts.set_block_based_table_factory(table)
    return opts


def db_options(memory_budget: int, path: Path) -> Options:
    """The RocksDB options of an outbox database at ``path`` (also used by the
    benchmark's bare anchor, so that its "physical limit" has the same WAL, memtable
    and I/O settings)."""
    return _options(memory_budget, Cache(memory_budget // 4), direct_io=_direct_io_at(path))


def _direct_io_at(path: Path) -> bool:
    """``direct_io_works`` for the database at ``path`` (probed in its parent while the
    database directory does not exist yet)."""
    return direct_io_works(path if path.is_dir() else path.parent)


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
            _options(memory_budget, cache, direct_io=_direct_io_at(path)),
            column_families={n: _options(memory_budget, cache) for n in names},
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
        raw_reserved = meta.get(_RESERVED_KEY)
        reserved = _U64.unpack(raw_reserved)[0] if raw_reserved is not None else 1
        watermarks: dict[Stream, int] = {}
        usage: dict[Stream, ClassUsage] = {}
        max_seq = 0
        for stream in Stream:
            raw_ack = meta.get(_ack_key(stream))
            watermarks[stream] = _U64.unpack(raw_ack)[0] if raw_ack is not None else 0
            raw_count = meta.get(_count_key(stream))
            records, nbytes = _COUNT.unpack(raw_count) if raw_count is not None else (0, 0)
            usage[stream] = ClassUsage(records, nbytes)
            for seq, value in (self._first(stream), self._last(stream)):
                if seq is not None and value is not None:
                    decode_value(value)  # touches the first and last blocks: checksums
                    max_seq = max(max_seq, seq)
        pins = [pin for stream in Stream for pin in self._load_pins(stream)]
        return LoadedState(reserved, max_seq, watermarks, usage, pins)

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
        prefix = _pin_prefix(stream)
        for key, value in self._meta_under(prefix):
            last = _U64.unpack_from(value)[0]
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
        in rocksdict: a 270 ms write froze every other thread for 268 ms), the fsync
        is ``flush_wal(True)``, which releases it: other threads, the event loop
        among them, run while the disk works.
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
        flushed (about 0.6 us: three in-memory properties).  With atomic flush every
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
        put, keys_of = batch.put, _U64.pack
        for stream, first_seq, values in runs:
            batch.set_default_column_family(self._handles[stream])
            # a C-level loop: no Python bytecode per record
            deque(map(put, map(keys_of, range(first_seq, first_seq + len(values))), values), 0)
        batch.set_default_column_family(None)
        for stream, usage in counts.items():
            batch.put(
                _count_key(stream), _COUNT.pack(usage.records, usage.bytes), self._meta_handle
            )
        if reserved_until is not None:
            batch.put(_RESERVED_KEY, _U64.pack(reserved_until), self._meta_handle)
        for key, first_seq in receipts:
            batch.put(_RECEIPT_PREFIX + key, _U64.pack(first_seq), self._meta_handle)
        self.commit(batch, sync=False)

    def reserve_seqs(self, reserved_until: int) -> None:
        batch = WriteBatch(raw_mode=True)
        batch.put(_RESERVED_KEY, _U64.pack(reserved_until), self._meta_handle)
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
            raw = self._meta.get(_RECEIPT_PREFIX + key)
        except Exception as exc:
            raise classify_storage_error(exc) from exc
        return None if raw is None else int(_U64.unpack(raw)[0])

    def receipts(self, prefix: bytes) -> dict[bytes, int]:
        """Every receipt whose key starts with ``prefix``: key -> first seq."""
        skip = len(_RECEIPT_PREFIX)
        try:
            return {
                key[skip:]: _U64.unpack(value)[0]
                for key, value in self._meta_under(_RECEIPT_PREFIX + prefix)
            }
        except Exception as exc:
            raise classify_storage_error(exc) from exc

    def drop_receipt(self, key: bytes, sync: bool) -> None:
        batch = WriteBatch(raw_mode=True)
        batch.delete(_RECEIPT_PREFIX + key, self._meta_handle)
        self.commit(batch, sync)

    def put_pin(self, pin: BatchBoundary) -> None:
        batch = WriteBatch(raw_mode=True)
        value = _U64.pack(pin.last_seq) + pin.batch_id.encode()
        batch.put(_pin_key(pin.stream, pin.first_seq), value, self._meta_handle)
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
        batch.put(_ack_key(stream), _U64.pack(up_to), self._meta_handle)
        self.put_count(batch, stream, current, count, nbytes)
        for pin in drop_pins:
            batch.delete(_pin_key(pin.stream, pin.first_seq), self._meta_handle)
        self.commit(batch, sync)
        return Removal([], count, nbytes)

    def put_count(
        self, batch: WriteBatch, stream: Stream, current: ClassUsage, count: int, nbytes: int
    ) -> None:
        left = ClassUsage(max(0, current.records - count), max(0, current.bytes - nbytes))
        batch.put(_count_key(stream), _COUNT.pack(left.records, left.bytes), self._meta_handle)

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

        Also says what was walked, see ``_outbox_reader``.
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
