"""Group commit: concurrent appends are coalesced into one synced WriteBatch.

Producers put a ``PendingAppend`` in the queue and await its future.  One
flusher task takes everything queued (up to ``max_records``), hands it to the
commit callback as one group, resolves the futures, and loops while more
arrived during the fsync.  So under load, the cost of one fsync is shared by
every producer that arrived while the previous one ran.

Blocking RocksDB calls run on ``WriterThread``, one dedicated thread, so the
event loop never waits on fsync and writes are applied in submission order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from sync.protocol import Stream

__all__ = ["GroupCommitQueue", "PendingAppend", "WriterThread"]

P = ParamSpec("P")
T = TypeVar("T")


class WriterThread:
    """A single thread for every blocking write, in submission order."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-writer")

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


@dataclass(slots=True)
class PendingAppend:
    """Encoded values waiting for a seq and a commit; the future gets the first seq
    (the values get consecutive seqs from it)."""

    stream: Stream
    values: list[bytes]
    nbytes: int
    future: asyncio.Future[int] = field(repr=False)


class GroupCommitQueue:
    """Bounded groups of pending appends, committed one group at a time."""

    def __init__(
        self, commit: Callable[[list[PendingAppend]], Awaitable[None]], max_records: int
    ) -> None:
        self._commit = commit
        self._max_records = max_records
        self._pending: deque[PendingAppend] = deque()
        self._pending_bytes = 0
        self._flusher: asyncio.Task[None] | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes queued but not yet committed (they count against the size cap)."""
        return self._pending_bytes

    def submit(self, item: PendingAppend) -> None:
        self._pending.append(item)
        self._pending_bytes += item.nbytes
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    def _take_group(self) -> list[PendingAppend]:
        group: list[PendingAppend] = []
        count = 0
        while self._pending:
            size = len(self._pending[0].values)
            if group and count + size > self._max_records:
                break
            group.append(self._pending.popleft())
            count += size
        return group

    async def _flush_loop(self) -> None:
        while self._pending:
            group = self._take_group()
            try:
                await self._commit(group)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting producer
                for item in group:
                    if not item.future.done():
                        item.future.set_exception(exc)
            except BaseException:
                for item in group:
                    item.future.cancel()
                raise
            finally:
                self._pending_bytes -= sum(item.nbytes for item in group)

    async def drain(self) -> None:
        """Wait until everything submitted so far is committed or failed."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
