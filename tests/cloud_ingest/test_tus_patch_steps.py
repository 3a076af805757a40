"""Worker-thread steps per PATCH: a body of at most one hand-over (1 MiB) is written,
verified and fsynced in one step, and the crash checks every PATCH runs first
(was the upload written but never finished, or adopted but never saved?) are a
stat or two on the loop, not steps of their own.  Each step is a hop to a
thread and back, the overhead of a 1 MiB PATCH.

The steps are counted by the loop's default executor (a real thread pool that
records what it is given); the data written is checked as well.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cloud_ingest.tus_fixtures import (
    OCTET,
    TusServer,
    auth,
    checksum_header,
    create,
    metadata_header,
    start_tus,
)
from tests.support.clock import FakeClock

MiB = 1 << 20


class _RecordingExecutor(ThreadPoolExecutor):
    """A thread pool that records the name of each function it runs."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.steps: list[str] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.steps.append(_name(fn))
        return super().submit(fn, *args, **kwargs)


def _name(fn: Callable[..., Any]) -> str:
    if isinstance(fn, functools.partial) and fn.args:  # to_thread: partial(ctx.run, func, ...)
        fn = fn.args[0]
    return getattr(fn, "__name__", repr(fn))


@pytest.fixture
async def executor() -> AsyncIterator[_RecordingExecutor]:
    recording = _RecordingExecutor()
    asyncio.get_running_loop().set_default_executor(recording)
    yield recording
    recording.shutdown(wait=True)


@pytest.fixture
async def tus(tmp_path: Path, executor: _RecordingExecutor) -> AsyncIterator[TusServer]:
    async for server in start_tus(tmp_path, FakeClock(1_000_000.0)):
        yield server


async def _patch(session: aiohttp.ClientSession, url: str, offset: int, body: bytes) -> None:
    headers = auth(
        **{"Upload-Offset": str(offset), "Content-Type": OCTET},
        **{"Upload-Checksum": checksum_header(body), "Content-Length": str(len(body))},
    )
    async with session.patch(url, data=io.BytesIO(body), headers=headers) as r:
        assert r.status == 204, await r.text()
        assert r.headers["Upload-Offset"] == str(offset + len(body))


async def test_a_1_mib_patch_is_one_worker_thread_step(
    tus: TusServer, executor: _RecordingExecutor
) -> None:
    chunks = [bytes([n]) * MiB for n in range(3)]
    whole = hashlib.sha256(b"".join(chunks)).hexdigest()
    async with aiohttp.ClientSession() as session:
        url = await create(
            session, tus, 3 * MiB, **{"Upload-Metadata": metadata_header({"sha256": whole})}
        )
        await _patch(session, url, 0, chunks[0])  # the first may arm the chunk guard
        executor.steps.clear()
        await _patch(session, url, MiB, chunks[1])
        assert executor.steps == ["_write_rest_and_keep"]
        await _patch(session, url, 2 * MiB, chunks[2])  # completes: the blob is adopted
    assert [u.sha256 for u in tus.completed] == [whole]
    assert tus.blobs.read(whole) == b"".join(chunks)


async def test_a_larger_body_hands_over_whole_mibs_and_writes_the_rest_in_the_last_step(
    tus: TusServer, executor: _RecordingExecutor
) -> None:
    first = (bytes(range(256)) * (3 * MiB // 256))[: 2 * MiB + 300_000]
    second = first[::-1]
    async with aiohttp.ClientSession() as session:
        url = await create(session, tus, len(first) + len(second) + 1)  # not complete
        await _patch(session, url, 0, first)
        executor.steps.clear()
        await _patch(session, url, len(first), second)
        assert executor.steps[-1] == "_write_rest_and_keep"
        assert set(executor.steps[:-1]) == {"_write"}
        assert 1 <= len(executor.steps[:-1]) <= 2
    upload_id = url.rsplit("/", 1)[1]
    assert tus.store.data_path(upload_id).read_bytes() == first + second
