"""Group commit: concurrent writes share one transaction (and one fsync).

Each caller of :meth:`GroupCommit.submit` waits for the commit of the group
its item went into and gets that item's own result; an item submitted while a
commit runs goes into the next one, which takes every item waiting then (up to
``max_group``).  One failed commit fails every item of its group (each caller
sees the error; none of them is recorded): callers check their item before
submitting it, so what reaches a commit is expected to go in.

A caller cancelled while it waits does not take its item back: the commit may
still record it (as a crash after the commit would leave it recorded).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Runs ``commit(items) -> results`` (one result per item, in order) for groups of
    the items submitted concurrently, one group at a time."""

    def __init__(
        self, commit: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_group: int = 256
    ) -> None:
        self._commit = commit
        self._max_group = max_group
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Commit ``item`` with whatever else is waiting; its result once that commit is done."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_mark_retrieved)  # its caller may be gone
        self._waiting.append((item, future))
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="group-commit")
        return await asyncio.shield(future)

    async def drain(self) -> None:
        """Wait until every submitted item has been committed (or failed)."""
        while self._runner is not None:
            await asyncio.shield(self._runner)

    async def _run(self) -> None:
        try:
            while self._waiting:
                group = self._waiting[: self._max_group]
                del self._waiting[: self._max_group]
                await self._commit_group(group)
        finally:
            self._runner = None

    async def _commit_group(self, group: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._commit([item for item, _ in group])
        except Exception as exc:  # noqa: BLE001 - every caller of the group sees why
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (shutdown): the callers are told, then it goes on
            for _, future in group:
                if not future.done():
                    future.cancel()
            raise
        for (_, future), result in zip(group, results, strict=True):
            if not future.done():
                future.set_result(result)


def _mark_retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
