"""Interoperability: the unmodified tuspy client against our tus server.

tuspy (sync, requests) runs in a thread; the server runs on the test loop on a
real port behind a small TCP proxy that cuts every connection once the client
has sent about half the file.  The upload then resumes from the server's
offset (tuspy HEADs the known URL) and completes byte-exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError, TusUploadFailed

from tests.cloud_ingest.tus_fixtures import FakeClock, TusServer, start_tus

SIZE = 20 * 1000 * 1000
CHUNK = 1 << 20


@dataclass
class CuttingProxy:
    """Forwards TCP to ``upstream``; cuts all connections once ``cut_after``
    client bytes went through (only once)."""

    upstream_port: int
    cut_after: int
    sent: int = 0
    cut: bool = False
    port: int = 0

    async def serve(self) -> asyncio.Server:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        await asyncio.gather(
            self._pipe(reader, up_writer, count=True),
            self._pipe(up_reader, writer, count=False),
            return_exceptions=True,
        )
        for w in (writer, up_writer):
            w.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool
    ) -> None:
        try:
            while data := await reader.read(64 * 1024):
                if count and not self.cut:
                    self.sent += len(data)
                    if self.sent >= self.cut_after:
                        self.cut = True
                        writer.transport.abort()
                        return
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()


@pytest.fixture
async def tus(tmp_path: Path) -> AsyncIterator[TusServer]:
    async for server in start_tus(tmp_path, FakeClock(), max_size=1 << 30):
        yield server


async def test_tuspy_upload_cut_half_way_resumes_byte_exact(tus: TusServer) -> None:
    data = os.urandom(SIZE)
    digest = hashlib.sha256(data).hexdigest()
    proxy = CuttingProxy(tus.server.port or 0, cut_after=SIZE // 2)
    server = await proxy.serve()
    endpoint = f"http://127.0.0.1:{proxy.port}/v1/uploads/"
    client = tus_client.TusClient(endpoint, headers={"Authorization": "Bearer tok-a"})
    metadata = {"sha256": digest, "stream": "raw_frames", "filename": "cam1.bin"}

    def first_attempt() -> str | None:
        uploader = client.uploader(
            file_stream=io.BytesIO(data),
            chunk_size=CHUNK,
            metadata=metadata,
            upload_checksum=True,
        )
        with pytest.raises((TusCommunicationError, TusUploadFailed, OSError)):
            uploader.upload()
        return uploader.url

    def resume(url: str) -> int:
        uploader = client.uploader(
            file_stream=io.BytesIO(data), chunk_size=CHUNK, url=url, upload_checksum=True
        )
        start = uploader.offset
        uploader.upload()
        return start

    try:
        url = await asyncio.to_thread(first_attempt)
        assert proxy.cut
        assert url is not None
        resumed_from = await asyncio.to_thread(resume, url)
    finally:
        server.close()
        await server.wait_closed()
    assert 0 < resumed_from < SIZE
    assert resumed_from % CHUNK == 0  # the cut checksummed chunk was discarded whole
    assert len(tus.completed) == 1
    assert tus.completed[0].device_id == "dev-a"
    assert tus.completed[0].metadata == metadata
    assert tus.blobs.path_for(digest).read_bytes() == data
