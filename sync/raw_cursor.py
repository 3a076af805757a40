"""Pure: which raw records are taken, under way, settled, and how far they may be acked.

Several blobs of one raw stream are uploaded at once (``sync.raw_lanes``), so
they finish out of seq order; ``Outbox.ack`` deletes a whole prefix, so only the
settled records below every record still under way may be acked.

* ``take``: a record is taken for upload (seqs come in order from the outbox);
* ``put_back``: its upload stopped (preempted at a chunk boundary, or failed):
  it is taken again before any newer record, and blocks acks above it;
* ``settle``: delivered (or given up): returns the seq to ack up to, if any;
* ``skip``: not delivered in this process; it stays in the outbox, so no ack
  at all from then on (an ack above it would delete it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RawCursor"]


@dataclass
class RawCursor:
    after_seq: int = 0  # the highest seq taken from the outbox (records below were all taken)
    flying: set[int] = field(default_factory=set)  # taken, not settled
    returned: set[int] = field(default_factory=set)  # taken, put back: taken again first
    done: set[int] = field(default_factory=set)  # settled, not acked yet
    skipped: list[int] = field(default_factory=list)

    def take(self, seq: int) -> None:
        if seq in self.returned:
            self.returned.discard(seq)
        elif seq <= self.after_seq:
            raise ValueError(f"seq {seq} was taken already (cursor at {self.after_seq})")
        else:
            self.after_seq = seq
        self.flying.add(seq)

    def next_returned(self) -> int | None:
        """The lowest seq put back, to be taken before any newer record."""
        return min(self.returned, default=None)

    def put_back(self, seq: int) -> None:
        self._taken(seq)
        self.flying.discard(seq)
        self.returned.add(seq)

    def skip(self, seq: int) -> None:
        self._taken(seq)
        self.flying.discard(seq)
        self.skipped.append(seq)

    def settle(self, seq: int) -> int | None:
        """``seq`` is delivered; the seq to ack up to now (None: nothing may be acked)."""
        self._taken(seq)
        self.flying.discard(seq)
        self.done.add(seq)
        if self.skipped:
            return None
        lowest_open = min(self.flying | self.returned, default=None)
        ready = [s for s in self.done if lowest_open is None or s < lowest_open]
        if not ready:
            return None
        self.done.difference_update(ready)
        return max(ready)

    def _taken(self, seq: int) -> None:
        if seq not in self.flying:
            raise ValueError(f"seq {seq} is not under way")
