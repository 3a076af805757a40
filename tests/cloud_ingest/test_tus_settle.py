"""The clean-up after a cut PATCH runs off the event loop and is never cut short itself."""

from __future__ import annotations

import asyncio
import threading

import pytest

from cloud_ingest.tus.settle import settle


async def test_a_cancelled_clean_up_still_finishes_before_the_cancel_passes_on() -> None:
    started, release = threading.Event(), threading.Event()
    finished: list[bool] = []

    def step() -> None:  # stands for the truncate + fsync of a refused chunk
        started.set()
        release.wait(5)
        finished.append(True)

    task = asyncio.create_task(settle(step))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # still waiting for the step (the upload's lock stays held)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == [True]


async def test_a_failing_clean_up_raises_its_error() -> None:
    def step() -> None:
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        await settle(step)
