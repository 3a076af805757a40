"""Appends of the outbox: checks, seqs, group commit, and what a failed write leaves.

Mixed into ``Outbox`` (``sync/outbox.py`` is the public facade).  Producers'
records are checked and encoded on the event loop, queued in the
``GroupCommitQueue``, and committed a group at a time: seqs are assigned at commit
time under the write lock, the WriteBatch (records, the classes' new totals, and
the seq ceiling when a new block is reserved) is applied on the event loop, and
its fsync runs on the writer thread, so the event loop does not wait on the disk
(except for fsyncs shorter than the hop itself: ``_outbox_fsync_placement``).
An ``append_many`` may carry a receipt (an opaque key of the caller's): it is
written in the group's WriteBatch with the append's first seq, so the records and
their receipt are durable together or not at all (it rides in the append's
``PendingAppend``).  A failed write is counted and marks the database for a
reopen (or, when it is corrupted, for quarantine at the next start).

Why the write is not on the writer thread too: rocksdict holds the GIL for the
whole of ``Rdict.write`` (fsync included when ``WriteOptions.sync`` is set), so a
write there stalls the event loop all the same, and handing the GIL back and
forth between the two threads made each batch slower still (docs/OUTBOX.md).
``flush_wal(True)`` releases the GIL while it fsyncs.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, NoReturn

from sync._outbox_capacity import CapacityMixin
from sync._outbox_eviction import NEVER_EVICTED, ClassUsage
from sync._outbox_fsync_placement import FsyncPlacement
from sync._outbox_reader import Walked
from sync._outbox_records import (
    KEY_SIZE,
    VALUE_HEADER,
    BlobRef,
    OutboxClass,
    check_receipt,
    encode_header,
)
from sync._outbox_recovery import mark_corrupt, open_or_quarantine
from sync._outbox_seq_floor import SeqFloor, read_seq_floor, write_seq_floor
from sync._outbox_store import LoadedState, classify_storage_error
from sync._outbox_writer import PendingAppend
from sync.errors import (
    OutboxClosed,
    OutboxCorrupted,
    OutboxDiskFull,
    RecordRejected,
    SyncError,
)
from sync.protocol import RAW_STREAMS, Stream
from sync.settings import Durability

__all__ = ["SEQ_BLOCK", "AppendMixin"]

SEQ_BLOCK: Final = 1 << 16  # seqs reserved on disk ahead of use; a crash skips the rest
_RECORD_OVERHEAD: Final = KEY_SIZE + VALUE_HEADER  # bytes a record counts beyond its payload
_METADATA_CLASSES: Final = frozenset(Stream).difference(RAW_STREAMS)
_FREE_CHECK_INTERVAL_S: Final = 0.25


def _timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` took (run on the writer thread, so the hop is not counted)."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


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


class AppendMixin(CapacityMixin):
    """Appends and write-failure handling for ``Outbox`` (which owns these attributes)."""

    _path: Path
    _closed: bool
    _broken: bool
    _quarantined: list[str]
    _next_seq: int
    _committed_seq: int
    _reserved_until: int
    _unconfirmed_from: int | None
    _shift: int | None
    _renumbered: tuple[tuple[int, int], ...]
    _walked: dict[Stream, tuple[int, Walked]]
    _written_since_free_check: int
    _free_margin: int
    _next_free_check: float
    _fsync_placement: FsyncPlacement

    async def append(
        self, stream: OutboxClass, payload: bytes, *, expires_at: float | None = None
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
        if (
            expires_at is not None
            or self._closed
            or size > self._settings.max_record_bytes
            or self._used_bytes + self._queue.pending_bytes + nbytes > self._settings.max_bytes
        ):
            return await self._submit(stream, [payload], expires_at)
        value = encode_header(self._clock(), None) + payload
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.submit(PendingAppend(stream, [value], nbytes, future))
        return await future

    async def append_many(
        self,
        stream: OutboxClass,
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
        self._check_open()  # also when there is nothing to store
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
        self, stream: OutboxClass, ref: BlobRef, *, expires_at: float | None = None
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
        self._check_open()
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
        if self._overflow(nbytes) > 0:  # room is the common case: no eviction planning
            await self._make_room(nbytes)
            self._check_open()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.submit(PendingAppend(stream, values, nbytes, future, receipt))
        return await future

    def _as_bytes(self, payload: object) -> bytes:
        if type(payload) is bytes:
            return payload
        if not isinstance(payload, bytes | bytearray | memoryview):
            self._reject("wrong_type", f"payload must be bytes, not {type(payload).__name__}")
        return bytes(payload)

    async def _commit_group(self, group: list[PendingAppend]) -> None:
        async with self._lock:
            first_seq = seq = self._next_seq
            # Consecutive appends to one class become one run (one loop of puts).
            runs: list[tuple[Stream, int, list[bytes]]] = []
            added: dict[Stream, list[int]] = {}  # stream -> [records, bytes]
            run_stream: Stream | None = None
            run_values: list[bytes] = []
            total = [0, 0]
            group_bytes = 0
            receipts: list[tuple[bytes, int]] = []  # (key, its append's first seq)
            for item in group:
                if item.receipt is not None:
                    receipts.append((item.receipt, seq))
                if item.stream is not run_stream:
                    run_stream, run_values = item.stream, []
                    runs.append((run_stream, seq, run_values))
                    total = added.setdefault(run_stream, [0, 0])
                run_values += item.values
                seq += len(item.values)
                total[1] += item.nbytes
                group_bytes += item.nbytes
            for stream, _, values in runs:
                added[stream][0] += len(values)
            records = seq - first_seq
            self._ensure_writable(records)
            self._check_free_space(records, group_bytes)
            usage = self._usage
            counts = {
                stream: ClassUsage(usage[stream].records + n, usage[stream].bytes + b)
                for stream, (n, b) in added.items()
            }
            self._next_seq = seq
            reserve = seq + SEQ_BLOCK if seq > self._reserved_until else None
            sync = self._settings.durability is Durability.SYNC or reserve is not None
            try:
                # Written here (rocksdict holds the GIL in write() on any thread), then
                # fsynced on the writer thread, where flush_wal releases the GIL.
                self._store.write_records(runs, counts, reserve, receipts)
                if sync:
                    await self._sync_group()
                if reserve is not None:
                    await self._writer.run(self._record_floor, reserve)
            except SyncError as exc:
                self._storage_failed(exc, records)
                raise
            self._committed_seq = seq - 1
            usage.update(counts)
            self._usage_changed()
            if reserve is not None:
                self._reserved_until = reserve
        for item in group:
            future = item.future
            if not future.done():
                future.set_result(first_seq)
            first_seq += len(item.values)
        if time.monotonic() - self._last_maintenance >= self._settings.maintenance_interval_s:
            await self.run_maintenance()

    async def _sync_group(self) -> None:
        """fsync the group just written: in place while this disk's fsyncs are short
        (cheaper than the thread hop), else on the writer thread (``FsyncPlacement``)."""
        placement = self._fsync_placement
        if placement.in_place_next(background_work=self._store.background_work()):
            started = time.perf_counter()
            self._store.sync_wal()  # releases the GIL, but the loop waits here
            placement.record(time.perf_counter() - started, in_place=True)
        else:
            seconds = await self._writer.run(_timed, self._store.sync_wal)
            placement.record(seconds, in_place=False)

    def _check_free_space(self, records: int, nbytes: int) -> None:
        """Refuse the group when the filesystem is below ``min_free_disk_bytes``.

        ``statvfs`` is not free either: far from the limit it is asked at most every
        ``_FREE_CHECK_INTERVAL_S`` or after half of the margin seen last was written;
        near the limit (and after a refusal) on every group.
        """
        minimum = self._settings.min_free_disk_bytes
        if not minimum:
            return
        self._written_since_free_check += nbytes
        if (
            self._written_since_free_check < self._free_margin
            and time.monotonic() < self._next_free_check
        ):
            return
        free = shutil.disk_usage(self._path).free
        self._written_since_free_check = 0
        self._free_margin = max(0, free - minimum) // 2
        self._next_free_check = time.monotonic() + _FREE_CHECK_INTERVAL_S
        if free < minimum:
            self._rejections["disk_full"] += records
            raise OutboxDiskFull(f"only {free} bytes free under {self._path}")

    def _ensure_writable(self, records: int) -> None:
        """After a failed write RocksDB refuses more until reopened: reopen first."""
        if not self._broken:
            return
        try:
            self._reopen()
        except SyncError as exc:
            self._storage_failed(exc, records)
            raise

    def _storage_failed(self, exc: SyncError, records: int) -> None:
        """Count a failed write (``records`` refused) and remember to reopen or quarantine."""
        if isinstance(exc, OutboxCorrupted):
            mark_corrupt(self._path, str(exc))
            reason = "corrupted"
        else:
            reason = "disk_full" if isinstance(exc, OutboxDiskFull) else "storage_error"
            self._broken = True
        if records:
            self._rejections[reason] += records

    def _reopen(self) -> None:
        """Reopen after an I/O error (RocksDB refuses writes until then); state is reloaded."""
        self._store.close()
        self._store, state, quarantined = open_or_quarantine(
            self._path, self._settings.memory_budget_bytes, self._clock()
        )
        self._quarantined += quarantined
        self._adopt(state)
        self._broken = False

    def _adopt(self, state: LoadedState, *, starting: bool = False) -> None:
        """Take the state read back from disk (at open and after a reopen): counters,
        watermarks and pins; seqs continue above every one the database has seen,
        and the next block is reserved on disk before any of it is used."""
        self._usage, self._watermarks = state.usage, state.watermarks
        self._usage_changed()
        self._walked.clear()
        for stream in Stream:
            self._generation[stream] += 1
        self._pins = {s: {} for s in Stream}
        for pin in state.pins:
            self._pins[pin.stream][pin.first_seq] = pin
        recorded = read_seq_floor(self._path)  # outlives a quarantined or lost database
        floor = max(
            state.reserved_until,
            state.max_seq + 1,
            *state.watermarks.values(),
            recorded.seq_floor if recorded else 1,
        )
        self._next_seq = max(self._next_seq, floor)
        self._committed_seq = self._next_seq - 1
        if recorded is not None:
            self._shift, self._renumbered = recorded.shift, recorded.renumbered
            if recorded.unconfirmed_from is not None:  # not confirmed in an earlier run
                self._unconfirmed_from = recorded.unconfirmed_from
        if starting and self._unconfirmed_from is None:
            # Seqs from here on are this run's: none is sent before a handshake shows
            # the cloud holds none of them (it does after a restored or lost database).
            self._unconfirmed_from = self._next_seq
        self._reserved_until = self._next_seq + SEQ_BLOCK
        self._store.reserve_seqs(self._reserved_until)
        self._record_floor(self._reserved_until)

    def _record_floor(self, reserved_until: int) -> None:
        """Write the seq floor file (before any seq below ``reserved_until`` is used)."""
        try:
            floor = SeqFloor(reserved_until, self._unconfirmed_from, self._shift, self._renumbered)
            write_seq_floor(self._path, floor)
        except OSError as exc:
            raise classify_storage_error(exc) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise OutboxClosed("the outbox is closed")
