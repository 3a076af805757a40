"""The PATCH body writer: pieces written and hashed on a worker thread, one hand-over
in flight.

A cut (the request's task cancelled) must never leave a piece being written
after the data file is cut back or kept: the cut waits for the hand-over in
flight, and one still queued for a thread is written rather than dropped (else
that wait would never end).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cloud_ingest.tus.receive import _BodyWriter


async def test_pieces_land_at_their_offsets_and_are_hashed_in_order(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"head")
    digest = hashlib.sha256()
    pieces = [bytes([i]) * (300_000 + i) for i in range(8)]  # two hand-overs and a rest
    with path.open("r+b") as f:
        writer = _BodyWriter(f.fileno(), 4, [digest])
        for piece in pieces:
            await writer.write(piece)
        await writer.finish()
    body = b"".join(pieces)
    assert writer.written == writer.handed == 4 + len(body)
    assert path.read_bytes() == b"head" + body
    assert digest.hexdigest() == hashlib.sha256(body).hexdigest()


async def test_a_cancelled_wait_still_writes_the_queued_piece(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=1)  # one busy thread queues the piece
    loop.set_default_executor(executor)
    release = threading.Event()
    busy = asyncio.ensure_future(asyncio.to_thread(release.wait))
    path = tmp_path / "data.bin"
    path.touch()
    try:
        with path.open("r+b") as f:
            writer = _BodyWriter(f.fileno(), 0, [])
            await writer.write(b"x" * 1000)
            waiting = asyncio.ensure_future(writer.finish())  # queued behind the busy thread
            await asyncio.sleep(0.05)
            waiting.cancel()  # the request is cut while the piece waits for a thread
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            release.set()
            await busy
            # the cut's step waits for the piece: it must come (and find it written)
            await asyncio.wait_for(asyncio.to_thread(writer.wait_idle), timeout=30)
            assert writer.written == 1000
            assert path.read_bytes() == b"x" * 1000
    finally:
        release.set()
        writer._idle.set()  # never strand a thread if the assertion above failed
        executor.shutdown(wait=True)
