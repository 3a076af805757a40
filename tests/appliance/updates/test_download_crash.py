"""SIGKILL in the middle of a download (a real child process, real HTTP on loopback):
the next download resumes from the bytes the killed one left on disk, and the
result is the artifact, byte for byte."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aiohttp import web

from appliance.updates.download import HttpFetcher, download_artifact
from sync.shared.signing import FileDigest
from tests.support.releases import REPO

TOKEN = "device-token-for-the-download-crash-test"
URL = "/v1/models/gate-ocr/v2/artifact"
SIZE = 4 * 1024 * 1024 + 5
PIECE = 64 * 1024


async def test_sigkill_mid_download_then_the_next_one_resumes(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    served = tmp_path / "served.tar"
    served.write_bytes(data)
    ranges: list[str | None] = []

    async def artifact(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            raise web.HTTPUnauthorized()
        ranges.append(request.headers.get("Range"))
        if len(ranges) > 1:
            return web.FileResponse(served)  # honours Range: 206 with Content-Range
        response = web.StreamResponse(headers={"Content-Length": str(SIZE)})
        await response.prepare(request)
        for start in range(0, SIZE, PIECE):  # slowly: the child is killed on the way
            await response.write(data[start : start + PIECE])
            await asyncio.sleep(0.2)  # the whole artifact would take 13 s
        return response

    app = web.Application()
    app.router.add_get(URL, artifact)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    dest = tmp_path / "got.tar"
    part = dest.with_name("got.tar.part")
    sha256 = hashlib.sha256(data).hexdigest()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.appliance.updates.download_crash_child",
        *(base, URL, str(dest), str(SIZE), sha256, TOKEN),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 90
        while not (part.exists() and part.stat().st_size >= 512 * 1024):
            assert time.monotonic() < deadline, "the child never got 512 kB"
            assert child.returncode is None, await child.stderr.read()  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        assert await child.wait() == -signal.SIGKILL
        kept = part.stat().st_size
        assert 0 < kept < SIZE and part.read_bytes() == data[:kept]
        out = await download_artifact(HttpFetcher(base, TOKEN), URL, dest, FileDigest(SIZE, sha256))
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await runner.cleanup()
    assert out.read_bytes() == data and not part.exists()
    assert ranges == [None, f"bytes={kept}-"]
