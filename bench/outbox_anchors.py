"""The anchors of the outbox benchmark, measured in the same run as the outbox: a bare
rocksdict loop of synced WriteBatches with the outbox's RocksDB options (the physical
limit), and a SQLite WAL queue (``synchronous=FULL``, transactions of 256) called
directly and from asyncio.  Every contender first takes ``WARM`` records untimed."""

from __future__ import annotations

import sqlite3
import struct
import time
from pathlib import Path
from typing import Any

__all__ = [
    "BATCH",
    "WARM",
    "aiosqlite_queue_append",
    "bare_rocksdict",
    "sqlite_queue_append",
    "warm_payloads",
]

BATCH = 256
WARM = 300_000  # > max_total_wal_size (64 MB) of 225-byte entries: WALs are recycled
QUEUE_TABLE = (
    "CREATE TABLE queue (seq INTEGER PRIMARY KEY, stream INTEGER, created REAL, payload BLOB)"
)


def warm_payloads(payloads: list[bytes]) -> list[bytes]:
    return [payloads[i % len(payloads)] for i in range(WARM)]


def _bare_db(path: Path) -> Any:
    """A bare rocksdict database with the outbox's options (WAL recycling, memtables)."""
    from rocksdict import Rdict

    from sync.outbox import db_options
    from sync.settings import OutboxSettings

    return Rdict(str(path), db_options(OutboxSettings().memory_budget_bytes, path))


def _bare_batches(db: Any, payloads: list[bytes], first_key: int) -> None:
    from rocksdict import WriteBatch, WriteOptions

    write_opts = WriteOptions()
    write_opts.sync = True
    pack = struct.Struct(">Q").pack
    for first in range(0, len(payloads), BATCH):
        batch = WriteBatch(raw_mode=True)
        for index in range(first, min(first + BATCH, len(payloads))):
            batch.put(pack(first_key + index), payloads[index])
        db.write(batch, write_opts)


def bare_rocksdict(path: Path, payloads: list[bytes], chunk: int) -> tuple[float, float]:
    """Records/s of a bare loop of synced WriteBatches of 256 (no outbox logic; keys
    ``WARM..`` after ``WARM`` untimed records), then of draining those records."""
    db = _bare_db(path)
    try:
        _bare_batches(db, warm_payloads(payloads), 0)
        start = time.perf_counter()
        _bare_batches(db, payloads, WARM)
        append_rate = len(payloads) / (time.perf_counter() - start)
        return append_rate, _bare_drain(db, len(payloads), chunk)
    finally:
        db.close()


def _bare_drain(db: Any, total: int, chunk: int) -> float:
    """Records/s of a bare iterate-``chunk``-then-synced-range-delete loop from key WARM."""
    from rocksdict import WriteBatch, WriteOptions

    write_opts = WriteOptions()
    write_opts.sync = True
    pack = struct.Struct(">Q").pack
    drained = 0
    start = time.perf_counter()
    after = WARM
    while True:
        it = db.iter()
        it.seek(pack(after))
        got = []
        while it.valid() and len(got) < chunk:
            got.append((it.key(), it.value()))
            it.next()
        if not got:
            break
        last = struct.unpack(">Q", got[-1][0])[0]
        batch = WriteBatch(raw_mode=True)
        batch.delete_range(pack(after), pack(last + 1))
        db.write(batch, write_opts)
        drained += len(got)
        after = last + 1
    elapsed = time.perf_counter() - start
    assert drained == total, (drained, total)
    return drained / elapsed


def _sqlite_batches(conn: sqlite3.Connection, payloads: list[bytes]) -> None:
    for first in range(0, len(payloads), BATCH):
        now = time.time()
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO queue (stream, created, payload) VALUES (1, ?, ?)",
            [(now, p) for p in payloads[first : first + BATCH]],
        )
        conn.execute("COMMIT")


def sqlite_queue_append(path: Path, payloads: list[bytes]) -> float:
    """Records/s of a SQLite WAL queue, synchronous=FULL, one transaction per 256
    (after ``WARM`` untimed records, like every contender)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(QUEUE_TABLE)
    _sqlite_batches(conn, warm_payloads(payloads))
    start = time.perf_counter()
    _sqlite_batches(conn, payloads)
    elapsed = time.perf_counter() - start
    conn.close()
    return len(payloads) / elapsed


async def aiosqlite_queue_append(path: Path, payloads: list[bytes]) -> float:
    """The same SQLite queue driven from asyncio through aiosqlite (its own thread),
    as an asyncio application would: the thread hop the outbox also pays."""
    import aiosqlite

    async def batches(conn: aiosqlite.Connection, payloads: list[bytes]) -> None:
        for first in range(0, len(payloads), BATCH):
            now = time.time()
            await conn.execute("BEGIN")
            await conn.executemany(
                "INSERT INTO queue (stream, created, payload) VALUES (1, ?, ?)",
                [(now, p) for p in payloads[first : first + BATCH]],
            )
            await conn.execute("COMMIT")

    async with aiosqlite.connect(path, isolation_level=None) as conn:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute(QUEUE_TABLE)
        await batches(conn, warm_payloads(payloads))
        start = time.perf_counter()
        await batches(conn, payloads)
        return len(payloads) / (time.perf_counter() - start)
