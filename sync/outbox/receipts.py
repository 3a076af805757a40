"""Receipts: did my append get stored?

An ``append_many`` may carry a receipt key, written with its records in the same
WriteBatch (``commit``), so that a producer can ask after a crash whether its
append was stored, and drop the receipt once it is of no use (docs/OUTBOX.md).
"""

from __future__ import annotations

import asyncio

from sync.errors import SyncError
from sync.outbox.database import Database
from sync.outbox.records import check_receipt
from sync.outbox.seqs import SeqCounter
from sync.outbox.writer import WriterThread
from sync.settings import Durability, OutboxSettings

__all__ = ["Receipts"]


class Receipts:
    """Looks receipts up (committed ones only) and drops them."""

    def __init__(
        self,
        settings: OutboxSettings,
        database: Database,
        seqs: SeqCounter,
        writer: WriterThread,
        lock: asyncio.Lock,
    ) -> None:
        self._settings = settings
        self._database = database
        self._seqs = seqs
        self._writer = writer
        self._lock = lock

    def receipt(self, key: bytes | str) -> int | None:
        """The first seq of the committed ``append_many`` that carried receipt ``key``,
        or None (never stored, not durable yet, or dropped).  It outlives its records'
        ack or eviction: the caller drops it (``drop_receipt``) once it is of no use.
        A bad key is RecordRejected; a storage failure OutboxStorageError (retry)."""
        self._database.check_open()
        first_seq = self._database.store.receipt(check_receipt(key))
        if first_seq is None or first_seq > self._seqs.committed_seq:
            return None  # in a group whose fsync has not returned: not stored yet
        return first_seq

    def receipts(self, prefix: bytes | str = b"") -> dict[bytes, int]:
        """Every committed receipt whose key starts with ``prefix``: key -> first seq
        (a producer looks for the ones it forgot to drop, e.g. before a crash)."""
        self._database.check_open()
        start = b"" if not prefix else check_receipt(prefix)
        held = self._database.store.receipts(start)
        committed = self._seqs.committed_seq
        return {key: seq for key, seq in held.items() if seq <= committed}

    async def drop_receipt(self, key: bytes | str) -> None:
        """Forget receipt ``key`` (no-op when not held), durable per the durability mode.
        Runs on the writer thread under the write lock, like the other meta writes."""
        database = self._database
        database.check_open()
        raw = check_receipt(key)
        sync = self._settings.durability is Durability.SYNC
        async with self._lock:
            database.ensure_writable(0)
            try:
                await self._writer.run(database.store.drop_receipt, raw, sync)
            except SyncError as exc:
                database.failed(exc, 0)
                raise
