"""Which seqs the cloud may already hold: confirming the outbox's seqs at the handshake.

Mixed into ``Outbox``.  ``_outbox_seq_floor`` says why a seq must never name two
records.  ``confirm_history(cloud_max)`` is called with the highest seq the cloud
holds for this device (from the handshake's watermarks), before any delta ack:

* the cloud holds seqs this outbox never issued (``cloud_max >= next_seq``: a
  database restored from an older copy, or a new one on a replaced disk): the
  counter jumps above them, so no new record reuses one;
* the seqs issued since the outbox opened (from ``U``, see ``_outbox_seq_floor``)
  are confirmed when every record from ``U`` on lies above ``cloud_max`` - always,
  unless the database was restored or lost;
* otherwise those records are renumbered: every record of ``[U, U + shift)``
  moves up by ``shift`` (``U + shift`` above both ``cloud_max`` and every seq
  issued), new records start at ``U + 2*shift``.  Order within each class is
  kept.  The shift is recorded in the floor file before the first move, and
  each chunk is one synced WriteBatch (a record is under its old seq or its new
  one, never both), so a crash resumes the same renumbering at the next
  handshake.  Records below ``U`` (sent before, or not) keep their seqs: the
  cloud's copy of such a seq is that very record.

Until confirmed, nothing is sent (the sync engine handshakes first after every
start), so no pin and no batch id names an unconfirmed seq.
"""

from __future__ import annotations

import logging
from itertools import islice
from typing import Final

from sync._outbox_appends import SEQ_BLOCK, AppendMixin
from sync.errors import RecordRejected
from sync.protocol import Stream

__all__ = ["HistoryMixin"]

log = logging.getLogger("yardlink.outbox")

_MOVE_CHUNK: Final = 10_000  # records per synced WriteBatch while renumbering


class HistoryMixin(AppendMixin):
    """Seq confirmation for ``Outbox`` (which owns these attributes)."""

    _generation: dict[Stream, int]

    @property
    def history_unconfirmed(self) -> bool:
        """True from the start until a handshake confirmed that the cloud holds none of
        the seqs issued since (``confirm_history``); nothing may be sent meanwhile."""
        return self._unconfirmed_from is not None

    async def confirm_history(self, cloud_max: int) -> int:
        """Make every seq this outbox holds or issues lie above ``cloud_max``, the
        highest seq the cloud holds for this device.  Returns how many records were
        renumbered (0 almost always)."""
        self._check_open()
        if type(cloud_max) is not int or cloud_max < 0:
            raise RecordRejected(f"cloud_max must be an int >= 0, not {cloud_max!r}")
        async with self._lock:
            if cloud_max >= self._next_seq:
                log.warning(
                    "the cloud holds seqs up to %d, beyond any this outbox issued (%d): "
                    "continuing above them (database restored or replaced?)",
                    cloud_max,
                    self._next_seq - 1,
                )
                await self._raise_floor(cloud_max + 1)
            first = self._unconfirmed_from
            if first is None:
                return 0
            if self._shift is None:
                if not any(self._holds(stream, first, cloud_max) for stream in Stream):
                    await self._confirmed()
                    return 0
                shift = max(self._next_seq, cloud_max + 1) - first
                self._shift = shift
                await self._raise_floor(first + 2 * shift)  # records the shift too
            moved = await self._renumber(first, self._shift)
            await self._confirmed()
            return moved

    def _holds(self, stream: Stream, first: int, last: int) -> bool:
        """Whether ``stream`` holds a record with ``first <= seq <= last``."""
        return next(self._store.scan(stream, first, last), None) is not None

    def _move_chunk(self, stream: Stream, first: int, shift: int) -> int:
        """On the writer thread: move up to ``_MOVE_CHUNK`` records; how many moved."""
        chunk = list(islice(self._store.scan(stream, first, first + shift - 1), _MOVE_CHUNK))
        if chunk:
            self._store.move_records(stream, chunk, shift)
        return len(chunk)

    async def _raise_floor(self, floor: int) -> None:
        """Hand out seqs from ``floor`` on (recorded on disk before any is used)."""
        self._next_seq = max(self._next_seq, floor)
        self._committed_seq = self._next_seq - 1
        self._reserved_until = self._next_seq + SEQ_BLOCK
        await self._writer.run(self._store.reserve_seqs, self._reserved_until)
        await self._writer.run(self._record_floor, self._reserved_until)

    async def _confirmed(self) -> None:
        if self._unconfirmed_from is not None and self._shift is not None:
            self._renumbered = (*self._renumbered, (self._unconfirmed_from, self._shift))
        self._unconfirmed_from = self._shift = None
        await self._writer.run(self._record_floor, self._reserved_until)

    def seq_now(self, seq: int) -> int:
        """The seq a record known as ``seq`` before a renumbering has now (a seq kept
        elsewhere, e.g. in a blob ref's meta); other seqs are returned as they are."""
        for first, shift in self._renumbered:
            if first <= seq < first + shift:
                seq += shift
        return seq

    def seq_then(self, seq: int) -> int:
        """The seq the record now known as ``seq`` had before any renumbering (to look it
        up in an index kept elsewhere); other seqs are returned as they are."""
        for first, shift in reversed(self._renumbered):
            if first + shift <= seq < first + 2 * shift:
                seq -= shift
        return seq

    async def _renumber(self, first: int, shift: int) -> int:
        """Move every record of ``[first, first + shift)`` up by ``shift``."""
        moved = 0
        for stream in Stream:
            while chunk := await self._writer.run(self._move_chunk, stream, first, shift):
                moved += chunk
            self._walked.pop(stream, None)
            self._generation[stream] += 1
        if moved:
            log.warning(
                "the cloud already holds seqs this new outbox had used: %d records "
                "renumbered from %d up by %d (order kept)",
                moved,
                first,
                shift,
            )
        return moved
