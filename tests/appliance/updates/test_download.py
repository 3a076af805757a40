"""Resumable artifact download over real HTTP (aiohttp on loopback): a cut resumes with
Range, an endless stream is cut at the declared size, a server ignoring Range is
restarted from 0, a wrong sha256 deletes the part."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from appliance.updates.download import (
    DownloadError,
    HttpFetcher,
    download_artifact,
    fetch_manifest,
)
from sync.linkemu import Direction, LinkConditions, LinkEmulator
from sync.scheduler import TokenBucket
from sync.shared.signing import ArtifactTooLong, FileDigest, HashMismatch

TOKEN = "device-token-for-download-tests"
SIZE = 3 * 1024 * 1024 + 17
URL = "/v1/models/gate-ocr/v2/artifact"


@dataclass
class Cloud:
    """What the test server does on each request, and what it saw."""

    path: Path
    mode: str = "normal"  # normal | cut_once | endless | no_range | altered
    ranges: list[str | None] = field(default_factory=list)
    served_endless: int = 0

    async def artifact(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            raise web.HTTPUnauthorized()
        self.ranges.append(request.headers.get("Range"))
        if self.mode == "cut_once":
            self.mode = "normal"
            return await self._cut(request)
        if self.mode == "endless":
            return await self._endless(request)
        if self.mode == "no_range":
            return web.Response(body=self.path.read_bytes())
        if self.mode == "altered":
            data = bytearray(self.path.read_bytes())
            data[100] ^= 0xFF
            return web.Response(body=bytes(data))
        return web.FileResponse(self.path)  # honours Range: 206 with Content-Range

    async def _cut(self, request: web.Request) -> web.StreamResponse:
        data = self.path.read_bytes()
        response = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await response.prepare(request)
        await response.write(data[: len(data) // 3])
        assert request.transport is not None
        request.transport.close()  # the link drops mid-body
        return response

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = bytes(64 * 1024)
        try:
            while True:
                await response.write(chunk)
                self.served_endless += len(chunk)
        except (ConnectionError, RuntimeError):
            return response


@pytest.fixture
def artifact(tmp_path: Path) -> tuple[Path, FileDigest]:
    path = tmp_path / "served.tar"
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return path, FileDigest(SIZE, hashlib.sha256(data).hexdigest())


@pytest.fixture
async def cloud(artifact: tuple[Path, FileDigest]) -> AsyncIterator[tuple[Cloud, str]]:
    state = Cloud(artifact[0])
    app = web.Application()
    app.router.add_get(URL, state.artifact)
    app.router.add_get("/v1/models/gate-ocr/v2/manifest", state.artifact)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield state, f"http://{host}:{port}"
    await runner.cleanup()


async def test_plain_download(cloud: tuple[Cloud, str], artifact, tmp_path: Path):
    state, base = cloud
    seen: list[int] = []
    out = await download_artifact(
        HttpFetcher(base, TOKEN), URL, tmp_path / "got.tar", artifact[1], on_progress=seen.append
    )
    assert out.read_bytes() == artifact[0].read_bytes()
    assert seen[-1] == SIZE and state.ranges == [None]
    assert not (tmp_path / "got.tar.part").exists()


async def test_a_cut_resumes_where_it_stopped(cloud: tuple[Cloud, str], artifact, tmp_path: Path):
    state, base = cloud
    state.mode = "cut_once"
    fetcher = HttpFetcher(base, TOKEN)
    with pytest.raises(DownloadError) as caught:
        await download_artifact(fetcher, URL, tmp_path / "got.tar", artifact[1])
    assert caught.value.retryable
    kept = (tmp_path / "got.tar.part").stat().st_size
    assert 0 < kept < SIZE
    out = await download_artifact(fetcher, URL, tmp_path / "got.tar", artifact[1])
    assert out.read_bytes() == artifact[0].read_bytes()
    assert state.ranges == [None, f"bytes={kept}-"]  # only the rest was asked for


async def test_an_endless_stream_is_cut_at_the_declared_size(
    cloud: tuple[Cloud, str], artifact, tmp_path: Path
):
    state, base = cloud
    state.mode = "endless"
    with pytest.raises(ArtifactTooLong):
        await download_artifact(HttpFetcher(base, TOKEN), URL, tmp_path / "got.tar", artifact[1])
    assert not (tmp_path / "got.tar.part").exists() and not (tmp_path / "got.tar").exists()
    await asyncio.sleep(0.2)
    # The connection was dropped: the server stopped within socket buffers of the limit.
    assert state.served_endless < SIZE + 16 * 1024 * 1024


async def test_a_server_ignoring_range_is_restarted_from_zero(
    cloud: tuple[Cloud, str], artifact, tmp_path: Path
):
    state, base = cloud
    part = tmp_path / "got.tar.part"
    part.write_bytes(artifact[0].read_bytes()[:1000])
    state.mode = "no_range"
    out = await download_artifact(HttpFetcher(base, TOKEN), URL, tmp_path / "got.tar", artifact[1])
    assert out.read_bytes() == artifact[0].read_bytes()
    assert state.ranges == ["bytes=1000-"]


async def test_a_wrong_sha256_deletes_the_part(cloud: tuple[Cloud, str], artifact, tmp_path: Path):
    state, base = cloud
    state.mode = "altered"
    with pytest.raises(HashMismatch):
        await download_artifact(HttpFetcher(base, TOKEN), URL, tmp_path / "got.tar", artifact[1])
    assert not (tmp_path / "got.tar.part").exists()


async def test_bad_token_and_paced_manifest(cloud: tuple[Cloud, str], artifact, tmp_path: Path):
    _, base = cloud
    with pytest.raises(DownloadError, match="401"):
        await download_artifact(HttpFetcher(base, "wrong"), URL, tmp_path / "x", artifact[1])
    # The manifest fetch refuses anything past 1 MiB (the artifact stands in for it).
    bucket = TokenBucket(None)
    with pytest.raises(ArtifactTooLong):
        await fetch_manifest(
            HttpFetcher(base, TOKEN, bucket=bucket), "/v1/models/gate-ocr/v2/manifest"
        )


async def test_a_link_cut_mid_download_resumes_through_the_link_emulator(
    cloud: tuple[Cloud, str], artifact, tmp_path: Path
):
    state, base = cloud
    host, port = base.removeprefix("http://").split(":")
    async with LinkEmulator((host, int(port)), LinkConditions(rtt_s=0.02)) as link:
        fetcher = HttpFetcher(link.url, TOKEN, read_timeout_s=5)
        link.cut_after(1_000_000, Direction.DOWN)  # the yard link drops 1 MB into the body
        with pytest.raises(DownloadError):
            await download_artifact(fetcher, URL, tmp_path / "got.tar", artifact[1])
        kept = (tmp_path / "got.tar.part").stat().st_size
        assert 0 < kept < SIZE
        out = await download_artifact(fetcher, URL, tmp_path / "got.tar", artifact[1])
        assert out.read_bytes() == artifact[0].read_bytes()
        assert state.ranges == [None, f"bytes={kept}-"]
        assert link.stats.cuts == 1
        # Over both connections, the link carried the artifact about once, not twice.
        assert link.stats.bytes[Direction.DOWN] < SIZE + 1_100_000
