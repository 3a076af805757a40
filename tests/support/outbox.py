"""Outbox settings, types and probes shared by the sync tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar

from rocksdict import Options, Rdict

from sync.outbox import Outbox
from sync.outbox.eviction import ClassUsage
from sync.outbox.records import COUNT, MAX_SEQ, META_CF, count_key
from sync.protocol import Stream
from sync.settings import OutboxSettings

__all__ = [
    "OUTBOX",
    "OpenOutbox",
    "outbox_at",
    "WriterGate",
    "assert_counts_true",
    "held_usage",
    "persisted_usage",
    "write_persisted_count",
]

P = ParamSpec("P")
T = TypeVar("T")

# the engine tests' outbox: no free-disk margin (the test disk may be fuller), 8 MiB memory
OUTBOX = OutboxSettings(min_free_disk_bytes=0, memory_budget_bytes=8 << 20)

# the ``open_outbox`` fixture (tests/sync/conftest.py): settings=None, **open kwargs -> Outbox
OpenOutbox = Callable[..., Outbox]


def outbox_at(root: Path) -> Outbox:
    """The outbox at ``root/outbox`` as the appliance opens it, with no free-disk margin
    (the test disk may be fuller than the default margin)."""
    return Outbox.open(root / "outbox", OutboxSettings(min_free_disk_bytes=0))


def held_usage(outbox: Outbox, stream: Stream) -> ClassUsage:
    """What ``stream`` of an open outbox really holds: every record walked and counted
    (key + value bytes, as the outbox counts them), not the outbox's own count."""
    records = nbytes = 0
    for key, value in outbox._store.scan(stream, 0, MAX_SEQ):
        records += 1
        nbytes += len(key) + len(value)
    return ClassUsage(records, nbytes)


def assert_counts_true(outbox: Outbox) -> None:
    """The outbox's count of every class is what the class really holds."""
    per_class = outbox.stats().per_class
    for stream in Stream:
        usage = per_class[stream]
        assert ClassUsage(usage.records, usage.bytes) == held_usage(outbox, stream), stream


@contextmanager
def _raw_database(path: Path) -> Iterator[Rdict]:
    """The ``meta`` family of a closed outbox database, opened raw."""
    names = Rdict.list_cf(str(path))
    db = Rdict(
        str(path),
        options=Options(raw_mode=True),
        column_families={name: Options(raw_mode=True) for name in names},
    )
    try:
        yield db.get_column_family(META_CF)
    finally:
        db.close()


def persisted_usage(path: Path, stream: Stream) -> ClassUsage:
    """The count of ``stream`` persisted in the closed outbox at ``path``."""
    with _raw_database(path) as meta:
        raw = meta.get(count_key(stream))
    return ClassUsage(*COUNT.unpack(raw)) if raw is not None else ClassUsage(0, 0)


def write_persisted_count(path: Path, stream: Stream, records: int, nbytes: int) -> None:
    """Overwrite the persisted count of ``stream`` in the closed outbox at ``path``."""
    with _raw_database(path) as meta:
        meta[count_key(stream)] = COUNT.pack(records, nbytes)


class WriterGate:
    """Holds a blocking store call on the outbox's writer thread until ``release``.

    ``wrap(fn)`` returns ``fn`` gated: once ``arm``ed, the next call made on the
    writer thread (``outbox-writer``) waits; calls on other threads (a group's write
    on the event loop) pass.  A test cancels the caller while the job is held: the
    job then lands on disk after its caller was cancelled, as in a real cancel.
    """

    def __init__(self) -> None:
        self._armed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._entered = asyncio.Event()
        self._released = threading.Event()
        self._left = threading.Event()

    def wrap(self, fn: Callable[P, T]) -> Callable[P, T]:
        def gated(*args: P.args, **kwargs: P.kwargs) -> T:
            if not self._armed or threading.current_thread().name != "outbox-writer":
                return fn(*args, **kwargs)
            self._armed = False
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._entered.set)
            self._released.wait(10)
            try:
                return fn(*args, **kwargs)
            finally:
                self._left.set()

        return gated

    def arm(self) -> None:
        """Hold the next gated call (from a coroutine: its loop is told of the hold)."""
        self._loop = asyncio.get_running_loop()
        self._entered = asyncio.Event()
        self._released.clear()
        self._left.clear()
        self._armed = True

    def disarm(self) -> None:
        self._armed = False

    async def entered(self) -> None:
        """Until a gated call is held."""
        await self._entered.wait()

    def release(self) -> None:
        self._released.set()

    async def left(self) -> None:
        """Until the held call has returned (its write is on disk), at most 10 s."""
        assert await asyncio.to_thread(self._left.wait, 10), "the held write did not end"
