"""``to_the_end``: a write and its booking finish even if their caller is cancelled."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sync.outbox.to_the_end import to_the_end


class _Step:
    """A step that waits for ``go``, then books (or fails)."""

    def __init__(self, fail: bool = False) -> None:
        self.go = asyncio.Event()
        self.started = asyncio.Event()
        self.booked = False
        self._fail = fail

    async def run(self) -> int:
        self.started.set()
        await self.go.wait()
        if self._fail:
            raise RuntimeError("the write failed")
        self.booked = True
        return 7


async def test_the_outcome_comes_back_when_nothing_is_cancelled() -> None:
    step = _Step()
    step.go.set()
    assert await to_the_end(step.run()) == 7
    assert step.booked


async def test_a_cancelled_caller_waits_for_the_step_even_when_cancelled_twice() -> None:
    step = _Step()
    caller = asyncio.create_task(to_the_end(step.run()))
    await step.started.wait()
    caller.cancel()
    await asyncio.sleep(0)
    caller.cancel()  # a second cancel does not cut the step short either
    await asyncio.sleep(0)
    assert not caller.done()  # still waiting for the step
    step.go.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert step.booked


async def test_a_step_that_fails_after_its_caller_was_cancelled_is_retrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    step = _Step(fail=True)
    caller = asyncio.create_task(to_the_end(step.run()))
    await step.started.wait()
    caller.cancel()
    await asyncio.sleep(0)
    step.go.set()
    with caplog.at_level(logging.ERROR), pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text


async def test_a_timeout_around_it_still_reads_as_a_timeout() -> None:
    step = _Step()

    async def release_later() -> None:
        await asyncio.sleep(0.05)
        step.go.set()

    releaser = asyncio.create_task(release_later())
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await to_the_end(step.run())
    assert step.booked  # the timeout waited for the step, then fired
    await releaser
