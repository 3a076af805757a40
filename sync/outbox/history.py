"""Which seqs the cloud may already hold: confirming the outbox's seqs at the handshake.

``seq_floor`` says why a seq must never name two
records.  ``confirm_history(cloud_max)`` is called with the highest seq the cloud
holds for this device (from the handshake's watermarks), before any delta ack:

* the cloud holds seqs this outbox never issued (``cloud_max >= next_seq``: a
  database restored from an older copy, or a new one on a replaced disk): the
  counter jumps above them, so no new record reuses one;
* the seqs issued since the outbox opened (from ``U``, see ``seq_floor``)
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

import asyncio
import logging
from itertools import islice
from typing import Final

from sync.errors import RecordRejected
from sync.outbox.database import Database
from sync.outbox.ledger import ClassLedger
from sync.outbox.seqs import SeqCounter
from sync.outbox.to_the_end import to_the_end
from sync.outbox.writer import WriterThread
from sync.protocol import Stream

__all__ = ["SeqHistory"]

log = logging.getLogger(__name__)

_MOVE_CHUNK: Final = 10_000  # records per synced WriteBatch while renumbering


class SeqHistory:
    """Confirms (or renumbers) this run's seqs against the highest one the cloud holds."""

    def __init__(
        self,
        database: Database,
        ledger: ClassLedger,
        seqs: SeqCounter,
        writer: WriterThread,
        lock: asyncio.Lock,
    ) -> None:
        self._database = database
        self._ledger = ledger
        self._seqs = seqs
        self._writer = writer
        self._lock = lock

    @property
    def unconfirmed(self) -> bool:
        """True from the start until a handshake confirmed that the cloud holds none of
        the seqs issued since (``confirm``); nothing may be sent meanwhile."""
        return self._seqs.unconfirmed_from is not None

    async def confirm(self, cloud_max: int) -> int:
        """Make every seq this outbox holds or issues lie above ``cloud_max``, the
        highest seq the cloud holds for this device.  Returns how many records were
        renumbered (0 almost always)."""
        self._database.check_open()
        if type(cloud_max) is not int or cloud_max < 0:
            raise RecordRejected(f"cloud_max must be an int >= 0, not {cloud_max!r}")
        async with self._lock:
            # a renumbering and its booking end together (``to_the_end``)
            return await to_the_end(self._confirm_locked(cloud_max))

    async def _confirm_locked(self, cloud_max: int) -> int:
        seqs = self._seqs
        if cloud_max >= seqs.next_seq:
            log.warning(
                "the cloud holds seqs up to %d, beyond any this outbox issued (%d): "
                "continuing above them (database restored or replaced?)",
                cloud_max,
                seqs.next_seq - 1,
            )
            await self._raise_floor(cloud_max + 1)
        first = seqs.unconfirmed_from
        if first is None:
            return 0
        if seqs.shift is None:
            if not any(self._holds(stream, first, cloud_max) for stream in Stream):
                await self._confirmed()
                return 0
            shift = seqs.begin_renumbering(max(seqs.next_seq, cloud_max + 1) - first)
            await self._raise_floor(first + 2 * shift)  # records the shift too
        else:
            shift = seqs.shift
        moved = await self._renumber(first, shift)
        await self._confirmed()
        return moved

    def _holds(self, stream: Stream, first: int, last: int) -> bool:
        """Whether ``stream`` holds a record with ``first <= seq <= last``."""
        return next(self._database.store.scan(stream, first, last), None) is not None

    def _move_chunk(self, stream: Stream, first: int, shift: int) -> int:
        """On the writer thread: move up to ``_MOVE_CHUNK`` records; how many moved."""
        store = self._database.store
        chunk = list(islice(store.scan(stream, first, first + shift - 1), _MOVE_CHUNK))
        if chunk:
            store.move_records(stream, chunk, shift)
        return len(chunk)

    async def _raise_floor(self, floor: int) -> None:
        """Hand out seqs from ``floor`` on (recorded on disk before any is used)."""
        seqs = self._seqs
        seqs.raise_to(floor)
        await self._writer.run(self._database.store.reserve_seqs, seqs.reserved_until)
        await self._writer.run(seqs.record_floor, seqs.reserved_until)

    async def _confirmed(self) -> None:
        seqs = self._seqs
        seqs.confirmed()
        await self._writer.run(seqs.record_floor, seqs.reserved_until)

    async def _renumber(self, first: int, shift: int) -> int:
        """Move every record of ``[first, first + shift)`` up by ``shift``."""
        moved = 0
        for stream in Stream:
            while chunk := await self._writer.run(self._move_chunk, stream, first, shift):
                moved += chunk
            self._ledger.forget_walks(stream)
        if moved:
            log.warning(
                "the cloud already holds seqs this new outbox had used: %d records "
                "renumbered from %d up by %d (order kept)",
                moved,
                first,
                shift,
            )
        return moved
