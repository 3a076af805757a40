"""The open outbox database and what keeps it usable after a failed write.

Owns the current ``OutboxStore`` (replaced by a reopen), the quarantined copies
found so far, and two flags: ``closed`` (``Outbox.close`` was called) and
``broken`` (RocksDB refuses writes after an I/O error until the database is
reopened).  Opening and reopening load the state from disk into the class ledger
and the seq counter through one path (``_adopt``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from sync.errors import OutboxClosed, OutboxCorrupted, OutboxDiskFull, SyncError
from sync.outbox.ledger import ClassLedger
from sync.outbox.records import LoadedState
from sync.outbox.recovery import mark_corrupt, open_or_quarantine
from sync.outbox.seqs import SeqCounter

__all__ = ["Database"]


class Database:
    """Opens the store (quarantining a damaged one), reopens it after a failure."""

    def __init__(
        self,
        path: Path,
        memory_budget: int,
        clock: Callable[[], float],
        ledger: ClassLedger,
        seqs: SeqCounter,
        rejections: Counter[str],
    ) -> None:
        self.path = path
        self._memory_budget = memory_budget
        self._clock = clock
        self._ledger = ledger
        self._seqs = seqs
        self._rejections = rejections  # records refused, per reason (shared with appends)
        self.closed = False
        self.broken = False
        self.store, state, self.quarantined = open_or_quarantine(path, memory_budget, clock())
        try:
            self._adopt(state, starting=True)  # counters, watermarks, pins, seqs
        except BaseException:
            self.store.close()  # the LOCK goes with it: a later open can retry
            raise

    def _adopt(self, state: LoadedState, *, starting: bool) -> None:
        self._ledger.adopt(state)
        self._seqs.adopt(state, self.store, starting=starting)

    def mark_closed(self) -> None:
        """No new call is taken from here on (``Outbox.close`` then drains and closes)."""
        self.closed = True

    def check_open(self) -> None:
        if self.closed:
            raise OutboxClosed("the outbox is closed")

    def ensure_writable(self, records: int) -> None:
        """After a failed write RocksDB refuses more until reopened: reopen first."""
        if not self.broken:
            return
        try:
            self._reopen()
        except SyncError as exc:
            self.failed(exc, records)
            raise

    def failed(self, exc: SyncError, records: int) -> None:
        """Count a failed write (``records`` refused) and remember to reopen or quarantine."""
        if isinstance(exc, OutboxCorrupted):
            mark_corrupt(self.path, str(exc))
            reason = "corrupted"
        else:
            reason = "disk_full" if isinstance(exc, OutboxDiskFull) else "storage_error"
            self.broken = True
        if records:
            self._rejections[reason] += records

    def _reopen(self) -> None:
        """Reopen after an I/O error (RocksDB refuses writes until then); state is reloaded."""
        self.store.close()
        self.store, state, quarantined = open_or_quarantine(
            self.path, self._memory_budget, self._clock()
        )
        self.quarantined += quarantined
        self._adopt(state, starting=False)
        self.broken = False
