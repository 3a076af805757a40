"""What the service's SQLite stores share: one aiosqlite connection, whole
transactions under an asyncio lock, private files, and the audit insert.

The catalog (``catalog_sqlite.py``) and the model registry's tables
(``models/store.py``) both hold ``catalog.db``; each change and its audit
event are written in one transaction (``insert_audit`` takes the caller's).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from sync.shared.durable_file import make_directory_durably

__all__ = ["SqliteDatabase", "insert_audit", "make_private_dir", "make_private_file"]


class SqliteDatabase:
    """One connection; ``_transaction`` keeps a multi-statement change whole."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._write_lock = asyncio.Lock()

    async def close(self) -> None:
        await self._db.close()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    # One hop to the connection's thread per query (execute, fetch and close there),
    # not three: each hop is a queue put and a wake-up of the event loop.

    async def _one(self, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        """The first row of a lookup by key (or one with ``LIMIT 1``), None when none."""
        rows = await self._db.execute_fetchall(sql, tuple(params))
        return next(iter(rows), None)

    async def _all(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        return list(await self._db.execute_fetchall(sql, tuple(params)))


async def insert_audit(
    db: aiosqlite.Connection,
    at: float,
    actor: str,
    action: str,
    subject: str,
    detail: dict[str, Any],
) -> None:
    """Append one audit event, inside the caller's transaction (the change it records)."""
    await db.execute(
        "INSERT INTO audit_log (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
        (at, actor, action, subject, json.dumps(detail, default=str)),
    )


def make_private_dir(directory: Path) -> None:
    """Create ``directory`` (and parents) if missing, readable by this user only (0700)."""
    make_directory_durably(directory, mode=0o700)  # its entry survives a power cut
    directory.chmod(0o700)


def make_private_file(path: Path) -> None:
    """The catalog holds token hashes and the audit log: 0600, also when it existed."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists():
            file.chmod(0o600)
