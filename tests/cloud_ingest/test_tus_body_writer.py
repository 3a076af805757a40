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

from aiohttp import StreamReader
from aiohttp.base_protocol import BaseProtocol

from cloud_ingest.tus.receive import _BodyWriter, _next_piece


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


async def _pieces(content: StreamReader) -> list[bytes]:
    pieces = []
    while piece := await _next_piece(content):
        pieces.append(piece)
    return pieces


async def test_the_body_is_read_as_the_buffers_that_arrived_not_joined() -> None:
    """Each piece is a buffer as the parser fed it: joining buffers into larger reads
    would copy every byte once more on the loop."""
    loop = asyncio.get_running_loop()
    content = StreamReader(BaseProtocol(loop), 1 << 20, loop=loop)
    fed = [b"a" * 70_000, b"b" * 90_000, b"c" * 50_000]
    for buffer in fed:
        content.feed_data(buffer)
    content.feed_eof()
    pieces = await _pieces(content)
    assert pieces == fed
    assert all(got is sent for got, sent in zip(pieces, fed, strict=True))  # not copied


async def test_the_end_of_an_http_chunk_is_not_the_end_of_a_chunked_body() -> None:
    loop = asyncio.get_running_loop()
    content = StreamReader(BaseProtocol(loop), 1 << 20, loop=loop)
    for buffer in (b"a" * 70_000, b"b" * 90_000, b"c" * 50_000):
        content.begin_http_chunk_receiving()
        content.feed_data(buffer)
        content.end_http_chunk_receiving()
    content.feed_eof()
    assert b"".join(await _pieces(content)) == b"a" * 70_000 + b"b" * 90_000 + b"c" * 50_000
