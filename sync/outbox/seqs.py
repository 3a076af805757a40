"""The device-monotonic seq counter of the outbox and its floor file.

One object owns every seq field: the next seq to hand out, the highest committed
one, the block reserved on disk ahead of use, and the history fields kept in the
floor file (``seq_floor`` says why seqs outlive the database; ``history`` uses
``unconfirmed_from``, ``shift`` and ``renumbered`` to confirm them with the cloud).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from sync.outbox.records import LoadedState
from sync.outbox.seq_floor import SeqFloor, read_seq_floor, write_seq_floor
from sync.outbox.store import OutboxStore, classify_storage_error

__all__ = ["SEQ_BLOCK", "SeqCounter"]

SEQ_BLOCK: Final = 1 << 16  # seqs reserved on disk ahead of use; a crash skips the rest


class SeqCounter:
    """Seqs handed out, committed and reserved, and what the floor file records."""

    def __init__(self, path: Path) -> None:
        self._path = path  # the database's path: the floor file sits beside it
        self.next_seq = 1
        self.committed_seq = 0  # readers see no seq above it (its fsync has returned)
        self.reserved_until = 1  # every seq below it is recorded on disk
        self.unconfirmed_from: int | None = None  # first seq not confirmed with the cloud
        self.shift: int | None = None  # a renumbering under way
        self.renumbered: tuple[tuple[int, int], ...] = ()  # done ones: (first, shift)

    def adopt(self, state: LoadedState, store: OutboxStore, *, starting: bool) -> None:
        """Continue above every seq the database (or the floor file) has seen, and
        reserve the next block on disk before any of it is used."""
        recorded = read_seq_floor(self._path)  # outlives a quarantined or lost database
        floor = max(
            state.reserved_until,
            state.max_seq + 1,
            *state.watermarks.values(),
            recorded.seq_floor if recorded else 1,
        )
        self.next_seq = max(self.next_seq, floor)
        self.committed_seq = self.next_seq - 1
        if recorded is not None:
            self.shift, self.renumbered = recorded.shift, recorded.renumbered
            if recorded.unconfirmed_from is not None:  # not confirmed in an earlier run
                self.unconfirmed_from = recorded.unconfirmed_from
        if starting and self.unconfirmed_from is None:
            # Seqs from here on are this run's: none is sent before a handshake shows
            # the cloud holds none of them (it does after a restored or lost database).
            self.unconfirmed_from = self.next_seq
        self.reserved_until = self.next_seq + SEQ_BLOCK
        store.reserve_seqs(self.reserved_until)
        self.record_floor(self.reserved_until)

    def hand_out(self, end: int) -> int | None:
        """Seqs below ``end`` are handed out (never again, even if their write fails);
        returns the new reservation when they reach past the reserved block."""
        self.next_seq = end
        return end + SEQ_BLOCK if end > self.reserved_until else None

    def committed(self, next_seq: int, reserved: int | None) -> None:
        """A group is durable: seqs below ``next_seq`` are committed (and ``reserved``,
        when the group reserved a block, is recorded)."""
        self.committed_seq = next_seq - 1
        if reserved is not None:
            self.reserved_until = reserved

    def raise_to(self, floor: int) -> None:
        """Hand out seqs from ``floor`` on (the caller records the new block on disk)."""
        self.next_seq = max(self.next_seq, floor)
        self.committed_seq = self.next_seq - 1
        self.reserved_until = self.next_seq + SEQ_BLOCK

    def begin_renumbering(self, shift: int) -> int:
        """This run's seqs move up by ``shift`` (recorded with the next floor)."""
        self.shift = shift
        return shift

    def confirmed(self) -> None:
        """This run's seqs are confirmed with the cloud (a renumbering, if any, done)."""
        if self.unconfirmed_from is not None and self.shift is not None:
            self.renumbered = (*self.renumbered, (self.unconfirmed_from, self.shift))
        self.unconfirmed_from = self.shift = None

    def record_floor(self, reserved_until: int) -> None:
        """Write the seq floor file (before any seq below ``reserved_until`` is used)."""
        try:
            floor = SeqFloor(reserved_until, self.unconfirmed_from, self.shift, self.renumbered)
            write_seq_floor(self._path, floor)
        except OSError as exc:
            raise classify_storage_error(exc) from exc

    def seq_now(self, seq: int) -> int:
        """The seq a record known as ``seq`` before a renumbering has now."""
        for first, shift in self.renumbered:
            if first <= seq < first + shift:
                seq += shift
        return seq

    def seq_then(self, seq: int) -> int:
        """The seq the record now known as ``seq`` had before any renumbering."""
        for first, shift in reversed(self.renumbered):
            if first + shift <= seq < first + 2 * shift:
                seq -= shift
        return seq
