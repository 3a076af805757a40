"""Where a group's fsync runs: in place on the event loop while this disk's fsyncs
are short, otherwise on the writer thread.

Handing the fsync to the writer thread keeps the event loop free while the disk
works, but the hop has a price of its own: two cross-thread wake-ups (the writer
thread woken by the job, the loop woken by the result), comparable to a
recycled-WAL ``fdatasync`` on a fast disk (figures in docs/OUTBOX.md). Waiting
out so short an fsync in place stalls the loop for less than the hop would
cost, and less than the group's ``Rdict.write`` already holds it (rocksdict
keeps the GIL there).

So the fsync runs in place only when

* RocksDB has no flush or compaction running or pending: its SST writes and their
  fsyncs contend with the WAL's, and nearly every slow WAL fsync falls in such a
  window (once per memtable, while it is being flushed; docs/OUTBOX.md), and
* each of the last ``WINDOW`` fsyncs, in place or on the thread, took less than
  ``limit_s``: one slower fsync (a busy disk, an SD card, writeback of other files)
  sends the next ``WINDOW`` groups to the thread, where they are still timed, and
  the disk earns its way back.

The loop is therefore blocked by an fsync for at most one unexpected stall at a
time, never by a disk that is slow as a rule. ``limit_s == 0`` keeps every fsync
on the thread.

A pure state machine: the caller times the fsyncs and asks before each one.
"""

from __future__ import annotations

from collections import deque
from typing import Final

__all__ = ["WINDOW", "FsyncPlacement"]

WINDOW: Final = 16  # fsyncs that must all have been short before one runs in place


class FsyncPlacement:
    """Decides, before each group's fsync, whether it runs on the event loop."""

    def __init__(self, limit_s: float) -> None:
        if limit_s < 0:
            raise ValueError(f"limit_s must be >= 0, not {limit_s}")
        self.limit_s = limit_s
        self._recent: deque[float] = deque(maxlen=WINDOW)
        self.in_place = 0  # fsyncs run on the event loop (for stats)
        self.on_thread = 0  # fsyncs run on the writer thread

    def in_place_next(self, *, background_work: bool) -> bool:
        """True when the next fsync should run on the event loop (``background_work``:
        RocksDB is flushing or compacting, or has a flush pending)."""
        return (
            not background_work
            and self.limit_s > 0
            and len(self._recent) == WINDOW
            and max(self._recent) < self.limit_s  # 16 floats: well under a microsecond
        )

    def record(self, seconds: float, *, in_place: bool) -> None:
        """One fsync took ``seconds`` (where it ran is counted for stats)."""
        self._recent.append(seconds)
        if in_place:
            self.in_place += 1
        else:
            self.on_thread += 1
