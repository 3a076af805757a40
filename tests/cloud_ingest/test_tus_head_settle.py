"""HEAD on an upload whose PATCH is still in flight reports the settled offset.

A client resuming after a cut sends HEAD while the server may not yet have seen
the cut; an offset read before that PATCH finishes is stale, and the client's
next PATCH at it gets 409 (tuspy's resume failed this way under load)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.cloud_ingest.tus_fixtures import OCTET, FakeClock, TusServer, auth, create, start_tus


@pytest.fixture
async def tus(tmp_path: Path) -> AsyncIterator[TusServer]:
    async for server in start_tus(tmp_path, FakeClock(), max_size=1 << 24):
        yield server


async def test_head_waits_for_the_patch_in_flight(tus: TusServer) -> None:
    async with aiohttp.ClientSession() as session:
        url = await create(session, tus, 1000)
        path = "/v1/uploads/" + url.rsplit("/", 1)[1]
        reader, writer = await asyncio.open_connection(tus.server.host, tus.server.port)
        writer.write(
            (
                f"PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-a\r\n"
                f"Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: {OCTET}\r\n"
                "Content-Length: 1000\r\n\r\n"
            ).encode()
            + b"z" * 400
        )
        await writer.drain()
        await asyncio.sleep(0.2)  # the server holds the upload's lock, reading the body

        async def head_offset() -> str:
            async with session.head(url, headers=auth()) as r:
                assert r.status == 200
                return r.headers["Upload-Offset"]

        head = asyncio.create_task(head_offset())
        await asyncio.sleep(0.2)
        assert not head.done()  # waits for the PATCH instead of answering a stale 0
        writer.close()  # the cut: the server keeps the 400 bytes it received
        await writer.wait_closed()
        assert await head == "400"
        async with session.patch(
            url, data=b"y" * 600, headers=auth(**{"Upload-Offset": "400", "Content-Type": OCTET})
        ) as r:
            assert r.status == 204
        upload_id = tus.completed[0].upload_id
        assert tus.store.data_path(upload_id).read_bytes() == b"z" * 400 + b"y" * 600
