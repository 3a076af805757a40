"""Group commit: concurrent appends are coalesced into one synced WriteBatch.

Producers put a ``PendingAppend`` in the queue and await its future.  One
flusher task takes everything queued (up to ``max_records``), hands it to the
commit callback as one group, resolves the futures, and loops while more
arrived during the fsync.  So under load, the cost of one fsync is shared by
every producer that arrived while the previous one ran.

The fsync of a group, and the longer RocksDB jobs (acks, eviction, expiry), run
on ``WriterThread``, one dedicated thread, in submission order, so the event loop
does not wait on the disk (short group fsyncs excepted, ``fsync_placement``;
rocksdict releases the GIL in ``flush_wal``; see
``appends`` for why a group's write itself stays on the event loop).
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from sync.errors import OutboxClosed
from sync.protocol import Stream

__all__ = ["GroupCommitQueue", "PendingAppend", "WriterThread"]

P = ParamSpec("P")
T = TypeVar("T")


class WriterThread:
    """A single thread for every blocking write, in submission order.

    Leaner than ``run_in_executor``: a job is one ``SimpleQueue.put`` and its
    result comes back with one ``call_soon_threadsafe`` that resolves the awaited
    future directly (no concurrent future chained to an asyncio one).  A job runs
    even if its caller was cancelled meanwhile (writes are never half-submitted).
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._stopped:
            raise OutboxClosed("the outbox is closed (its writer thread was shut down)")
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="outbox-writer", daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(loop, future, functools.partial(fn, *args, **kwargs)))
        return await future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                result = job.call()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller
                job.resolve(_fail, exc)
            else:
                job.resolve(_succeed, result)

    def shutdown(self) -> None:
        """Finish the queued jobs and join the thread.  Idempotent."""
        self._stopped = True
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None


@dataclass(slots=True)
class _Job:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    call: Callable[[], Any]

    def resolve(self, how: Callable[[asyncio.Future[Any], Any], None], outcome: object) -> None:
        try:
            self.loop.call_soon_threadsafe(how, self.future, outcome)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more


def _succeed(future: asyncio.Future[Any], result: object) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


@dataclass(slots=True)
class PendingAppend:
    """Encoded values waiting for a seq and a commit; the future gets the first seq
    (the values get consecutive seqs from it).  ``receipt``: a key written in the same
    WriteBatch with that first seq (``Outbox.receipt``)."""

    stream: Stream
    values: list[bytes]
    nbytes: int
    future: asyncio.Future[int] = field(repr=False)
    receipt: bytes | None = None


class GroupCommitQueue:
    """Bounded groups of pending appends, committed one group at a time."""

    def __init__(
        self, commit: Callable[[list[PendingAppend]], Awaitable[None]], max_records: int
    ) -> None:
        self._commit = commit
        self._max_records = max_records
        self._pending: deque[PendingAppend] = deque()
        self._pending_bytes = 0
        self._pending_records = 0
        self._flusher: asyncio.Task[None] | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes queued but not yet committed (they count against the size cap)."""
        return self._pending_bytes

    def submit(self, item: PendingAppend) -> None:
        self._pending.append(item)
        self._pending_bytes += item.nbytes
        self._pending_records += len(item.values)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    def _take_group(self) -> tuple[list[PendingAppend], int]:
        """The next group and its bytes: everything pending when it fits (the common case)."""
        if self._pending_records <= self._max_records:
            group = list(self._pending)
            self._pending.clear()
            self._pending_records = 0
            return group, self._pending_bytes
        group = []
        count = nbytes = 0
        while self._pending:
            size = len(self._pending[0].values)
            if group and count + size > self._max_records:
                break
            item = self._pending.popleft()
            group.append(item)
            count += size
            nbytes += item.nbytes
        self._pending_records -= count
        return group, nbytes

    async def _flush_loop(self) -> None:
        while self._pending:
            group, nbytes = self._take_group()
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
                self._pending_bytes -= nbytes

    async def drain(self) -> None:
        """Wait until everything submitted so far is committed or failed."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
