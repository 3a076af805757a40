"""Run a blocking step on a worker thread to its end, even if the caller is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["settle"]


async def settle(step: Callable[[], None]) -> None:
    """Run ``step`` on a worker thread to its end, off the event loop.

    If this task is cancelled meanwhile, the step still finishes before the
    cancel is passed on, so an upload's lock is not released while its data is
    being stored, cut back or fsynced (the next PATCH would see a stale offset).
    """
    done = asyncio.ensure_future(asyncio.to_thread(step))
    cancelled = False
    while True:
        try:
            await asyncio.shield(done)
            break
        except asyncio.CancelledError:
            if done.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
