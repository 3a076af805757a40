"""A write and its bookkeeping run to their end, even if the caller is cancelled.

A job handed to the ``WriterThread`` runs whatever happens to the coroutine that
awaits it (writes are never half-submitted).  The bookkeeping after the await
(the ``ClassLedger``'s counts, watermark and pins) must then run too: without it
the ledger keeps the state from before a removal that is on disk, and the next
write of the class persists counts made from it (docs/OUTBOX.md, "Counts that
drifted").  So a cancel that arrives while such a step runs waits for the step's
end (under the caller's write lock), then goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["to_the_end"]

T = TypeVar("T")


async def to_the_end(step: Coroutine[Any, Any, T]) -> T:
    """Await ``step`` in a task of its own; if this task is cancelled meanwhile, the
    step still finishes (its outcome is dropped) before the cancel is passed on."""
    task = asyncio.get_running_loop().create_task(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if task.done():  # the step itself was cancelled (the loop is closing)
            raise
    while not task.done():
        try:
            await asyncio.wait((task,))  # never cancels the step
        except asyncio.CancelledError:
            continue  # cancelled again: the step still comes first
    if not task.cancelled():
        task.exception()  # retrieved: the caller is cancelled, the step's error was booked
    raise asyncio.CancelledError
