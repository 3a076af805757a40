"""Every request of the sync engine's HTTP client ends within a bound, whatever the peer
does: a typed retryable error (``CloudUnreachable``), never a wait without end.

aiohttp starts ``sock_read`` only once a request body is written, so a peer (or a link)
that accepts a connection and then stops taking bytes would hold a body write, and the
request, for ever; a request waiting for a pooled connection has no timeout of its own
either.  The peers here are real sockets on loopback: one that reads a request's head and
then nothing more (its receive buffer is a few KiB, so the body soon stops moving), one
that answers byte by byte and never finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from sync.cloud_client import CONNECTIONS, CloudClient
from sync.errors import CloudUnreachable
from sync.outbox import Outbox
from sync.protocol import Stream
from sync.scheduler import TokenBucket
from sync.settings import LinkSettings
from tests.sync.engine_harness import append_events, drained, engine_for, wait_for
from tests.sync.ingest_server import BlobDir, lake_seqs, running_ingest
from tests.sync.tus_servers import stored_blob

REQUEST_TIMEOUT_S = 0.5
ENDS_WITHIN_S = 30.0  # far above the bounds here; without them these requests never end
BIG_BODY = b"\0" * (16 << 20)  # far more than the socket buffers on both sides hold
BLOB_BYTES = 8 << 20  # more than the client's socket buffer holds, too
ENGINE_TIMEOUT_S = 3.0  # the real service stores a chunk of BLOB_BYTES within it

# a connection's reader and writer, and an event set when the peer is torn down
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, asyncio.Event], Awaitable[None]]


@contextlib.asynccontextmanager
async def loopback_peer(handle: Handler) -> AsyncIterator[str]:
    """A TCP server on loopback whose accepted sockets have a small receive buffer.

    At teardown every connection is reset, which ends the handlers' reads, and their
    ``closing`` event is set, which ends their waits."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited when accepted
    sock.bind(("127.0.0.1", 0))
    serving: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
    closing = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        serving[task] = writer
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await handle(reader, writer, closing)
        finally:
            writer.transport.abort()
            del serving[task]

    server = await asyncio.start_server(serve, sock=sock)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.close()
        closing.set()
        for writer in serving.values():
            writer.transport.abort()
        await asyncio.gather(*serving, return_exceptions=True)
        await server.wait_closed()


async def reads_the_head_only(
    reader: asyncio.StreamReader, _: asyncio.StreamWriter, closing: asyncio.Event
) -> None:
    """Takes the request line and headers, then no byte more: the body stops moving."""
    await reader.readuntil(b"\r\n\r\n")
    await closing.wait()


async def reads_everything(
    reader: asyncio.StreamReader, _: asyncio.StreamWriter, closing: asyncio.Event
) -> None:
    """Takes every byte and never answers."""
    while await reader.read(1 << 16):
        pass


async def answers_without_end(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, closing: asyncio.Event
) -> None:
    """Reads a request without a body and starts an answer it never finishes: one byte
    of a chunked body every 0.1 s (each byte restarts aiohttp's ``sock_read``)."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while not closing.is_set():
        writer.write(b"1\r\nx\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)


async def ends_in_time(request: Awaitable[object]) -> CloudUnreachable:
    """The request must end, with ``CloudUnreachable``, well before ``ENDS_WITHIN_S``."""
    try:
        async with asyncio.timeout(ENDS_WITHIN_S):
            await request
    except CloudUnreachable as exc:
        assert exc.retryable
        return exc
    except TimeoutError:
        pytest.fail(f"the request did not end within {ENDS_WITHIN_S} s")
    pytest.fail("the request succeeded against a peer that never answers")


async def test_a_body_the_peer_stops_taking_ends_the_request() -> None:
    async with loopback_peer(reads_the_head_only) as url:
        client = CloudClient(url, "token", request_timeout_s=REQUEST_TIMEOUT_S)
        try:
            exc = await ends_in_time(client.put_batch("b-1", BIG_BODY))
            assert "no body bytes taken" in str(exc)
            assert 0 < client.bytes_out < len(BIG_BODY)  # it had started, then stalled
        finally:
            await client.close()


async def test_an_answer_that_never_ends_ends_the_request() -> None:
    async with loopback_peer(answers_without_end) as url:
        client = CloudClient(
            url, "token", request_timeout_s=REQUEST_TIMEOUT_S, connect_timeout_s=0.2
        )
        try:
            exc = await ends_in_time(client.request("GET", "/v1/anything"))
            assert "no answer within" in str(exc)
        finally:
            await client.close()


async def test_a_request_waiting_for_a_pooled_connection_ends() -> None:
    """Every pooled connection is held by a request whose body the bandwidth cap paces
    slowly (its own waits: no bound runs): a request behind them waits for a connection
    at most ``connect_timeout_s + request_timeout_s``, not until one is free."""
    accepted = 0

    async def counts_and_reads(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, closing: asyncio.Event
    ) -> None:
        nonlocal accepted
        accepted += 1
        await reads_everything(reader, writer, closing)

    async with loopback_peer(counts_and_reads) as url:
        client = CloudClient(
            url,
            "token",
            bucket=TokenBucket(8_000),  # 1 kB/s: each slow body takes a minute
            request_timeout_s=REQUEST_TIMEOUT_S,
            connect_timeout_s=0.2,
        )
        slow = [
            asyncio.create_task(client.put_batch(f"b-{i}", b"\0" * (64 << 10)))
            for i in range(CONNECTIONS)
        ]
        try:
            await wait_for(lambda: accepted == CONNECTIONS)
            exc = await ends_in_time(client.blob_held("cd" * 32))
            assert "ConnectionTimeoutError" in str(exc)
            assert not any(task.done() for task in slow)  # they were holding the pool
        finally:
            for task in slow:
                task.cancel()
            await asyncio.gather(*slow, return_exceptions=True)
            await client.close()


async def test_the_engine_gets_past_a_link_that_stops_taking_bytes(
    tmp_path: Path, outbox: Outbox
) -> None:
    """Nothing lost: the first two requests with a large body (the blob's chunks) go to
    a peer that stops taking them; each ends with a retryable error, the upload resumes
    and completes, and the events beside it reach the lake too."""
    seqs = await append_events(outbox, 300)
    blobs = BlobDir(tmp_path / "blobs")
    blob = os.urandom(BLOB_BYTES)
    ref = blobs.add(blob, seq=1)
    await outbox.append_blob_ref(Stream.RAW_SAMPLED, ref)
    stalled = 0
    async with running_ingest(tmp_path / "cloud") as cloud:

        async def stalls_large_bodies(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, closing: asyncio.Event
        ) -> None:
            """Forwards request by request (a kept-alive connection carries several);
            the first two with a large body get no byte of it taken."""
            nonlocal stalled
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", cloud.port)
            answers = asyncio.create_task(pipe(up_reader, writer))
            try:
                while head := await reader.readuntil(b"\r\n\r\n"):
                    found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                    length = 0 if found is None else int(found[1])
                    if length > 1 << 20 and stalled < 2:
                        stalled += 1
                        await closing.wait()  # takes no body byte
                    up_writer.write(head + await reader.readexactly(length))
                    await up_writer.drain()
            finally:
                answers.cancel()
                await asyncio.gather(answers, return_exceptions=True)
                up_writer.transport.abort()

        link = LinkSettings(
            backoff_initial_s=0.05,
            backoff_max_s=0.2,
            probe_interval_s=0.05,
            request_timeout_s=ENGINE_TIMEOUT_S,
        )
        chunks = BLOB_BYTES  # the blob goes in one request
        async with (
            loopback_peer(stalls_large_bodies) as url,
            engine_for(
                tmp_path,
                outbox,
                url,
                cloud.token,
                blobs,
                link=link,
                chunk_min_bytes=chunks,
                chunk_max_bytes=chunks,
            ) as (engine, _),
        ):
            await wait_for(
                drained(outbox, Stream.EVENTS, Stream.RAW_SAMPLED), timeout=ENDS_WITHIN_S
            )
            assert stalled == 2
            assert engine.progress().classes[Stream.RAW_SAMPLED].sent_records == 1
        assert sorted(lake_seqs(cloud.settings.data_dir, Stream.EVENTS)) == seqs
        assert stored_blob(cloud.settings.data_dir, ref.sha256) == blob


async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    while data := await src.read(1 << 16):
        dst.write(data)
        await dst.drain()
    dst.close()
