"""Committing a group of appends: seqs, one WriteBatch, its fsync, and the bookkeeping.

The ``GroupCommitQueue`` hands each group to ``GroupCommit.commit`` (under the write
lock): seqs are assigned here, the WriteBatch (records, the classes' new totals,
the appends' receipts, and the seq ceiling when a new block is reserved) is
applied on the event loop, and its fsync runs on the writer thread, so the event
loop does not wait on the disk (except for fsyncs shorter than the hop itself:
``fsync_placement``).  A failed write is counted and marks the database for a
reopen (or, when it is corrupted, for quarantine at the next start).

Why the write is not on the writer thread too: rocksdict holds the GIL for the
whole of ``Rdict.write`` (fsync included when ``WriteOptions.sync`` is set), so a
write there stalls the event loop all the same, and handing the GIL back and
forth between the two threads made each batch slower still (docs/OUTBOX.md).
``flush_wal(True)`` releases the GIL while it fsyncs.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Final

from sync.errors import OutboxDiskFull, SyncError
from sync.outbox.capacity import Expiry
from sync.outbox.database import Database
from sync.outbox.eviction import ClassUsage
from sync.outbox.fsync_placement import FsyncPlacement
from sync.outbox.ledger import ClassLedger
from sync.outbox.seqs import SeqCounter
from sync.outbox.writer import PendingAppend, WriterThread
from sync.protocol import Stream
from sync.settings import Durability, OutboxSettings

__all__ = ["FreeSpaceCheck", "GroupCommit"]

_FREE_CHECK_INTERVAL_S: Final = 0.25


def _timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` took (run on the writer thread, so the hop is not counted)."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


class FreeSpaceCheck:
    """Refuses groups while the filesystem is below ``min_free_disk_bytes``.

    ``statvfs`` is not free either: far from the limit it is asked at most every
    ``_FREE_CHECK_INTERVAL_S`` or after half of the margin seen last was written;
    near the limit (and after a refusal) on every group.
    """

    def __init__(self, path: Path, minimum: int, rejections: Counter[str]) -> None:
        self._path = path
        self._minimum = minimum
        self._rejections = rejections
        self._written = 0  # bytes since the filesystem was last asked
        self._margin = 0  # 0: ask the filesystem on the next group
        self._next_check = 0.0

    def check(self, records: int, nbytes: int) -> None:
        """OutboxDiskFull (``records`` counted as refused) when the disk is too full."""
        minimum = self._minimum
        if not minimum:
            return
        self._written += nbytes
        if self._written < self._margin and time.monotonic() < self._next_check:
            return
        free = shutil.disk_usage(self._path).free
        self._written = 0
        self._margin = max(0, free - minimum) // 2
        self._next_check = time.monotonic() + _FREE_CHECK_INTERVAL_S
        if free < minimum:
            self._rejections["disk_full"] += records
            raise OutboxDiskFull(f"only {free} bytes free under {self._path}")


class GroupCommit:
    """Writes one group of pending appends durably and books it."""

    def __init__(
        self,
        settings: OutboxSettings,
        database: Database,
        ledger: ClassLedger,
        seqs: SeqCounter,
        writer: WriterThread,
        lock: asyncio.Lock,
        placement: FsyncPlacement,
        free_space: FreeSpaceCheck,
        expiry: Expiry,
    ) -> None:
        self._settings = settings
        self._database = database
        self._ledger = ledger
        self._seqs = seqs
        self._writer = writer
        self._lock = lock
        self._placement = placement
        self._free_space = free_space
        self._expiry = expiry

    async def commit(self, group: list[PendingAppend]) -> None:
        """Commit ``group``; each append's future gets its first seq."""
        seqs, database = self._seqs, self._database
        async with self._lock:
            first_seq = seq = seqs.next_seq
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
            database.ensure_writable(records)
            self._free_space.check(records, group_bytes)
            usage = self._ledger.usage
            counts = {
                stream: ClassUsage(usage[stream].records + n, usage[stream].bytes + b)
                for stream, (n, b) in added.items()
            }
            reserve = seqs.hand_out(seq)
            sync = self._settings.durability is Durability.SYNC or reserve is not None
            try:
                # Written here (rocksdict holds the GIL in write() on any thread), then
                # fsynced on the writer thread, where flush_wal releases the GIL.
                database.store.write_records(runs, counts, reserve, receipts)
                if sync:
                    await self._sync_group()
                if reserve is not None:
                    await self._writer.run(seqs.record_floor, reserve)
            except SyncError as exc:
                database.failed(exc, records)
                raise
            except asyncio.CancelledError:
                # Cancelled during the fsync: the group is in the database, so in the
                # ledger too (the counts persisted next are made from it; booked only
                # now so that its bytes are not counted twice with the queue's
                # meanwhile; docs/OUTBOX.md, "Counts that drifted").
                self._ledger.added(counts)
                raise
            seqs.committed(seq, reserve)
            self._ledger.added(counts)
        for item in group:
            future = item.future
            if not future.done():
                future.set_result(first_seq)
            first_seq += len(item.values)
        if self._expiry.due():
            await self._expiry.run()

    async def _sync_group(self) -> None:
        """fsync the group just written: in place while this disk's fsyncs are short
        (cheaper than the thread hop), else on the writer thread (``FsyncPlacement``)."""
        placement, store = self._placement, self._database.store
        if placement.in_place_next(background_work=store.background_work()):
            started = time.perf_counter()
            store.sync_wal()  # releases the GIL, but the loop waits here
            placement.record(time.perf_counter() - started, in_place=True)
        else:
            seconds = await self._writer.run(_timed, store.sync_wal)
            placement.record(seconds, in_place=False)
