"""The tus client against the REAL ingest service's tus server, through the link emulator."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from sync.errors import RetryableUploadError
from sync.linkemu import Direction, LinkConditions, LinkEmulator
from sync.protocol import Stream, UploadMetadata
from sync.uploader import TusUploader
from tests.support.uploader import CHUNK, uploader_for
from tests.sync.tus_servers import TUS_SERVERS, TusTarget, serve_on_loopback, tus_target


@pytest.fixture(params=TUS_SERVERS)
async def cloud(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TusTarget]:
    async with tus_target(request.param, tmp_path) as running:
        yield running


@pytest.fixture
async def emu(cloud: TusTarget) -> AsyncIterator[LinkEmulator]:
    async with LinkEmulator(("127.0.0.1", cloud.port), LinkConditions(rtt_s=0.005)) as running:
        yield running


def blob(tmp_path: Path, size: int, name: str = "blob.bin") -> tuple[Path, UploadMetadata]:
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    return path, UploadMetadata(sha256=sha, stream=Stream.RAW_SAMPLED, seq=7, filename=f"{sha}.bin")


def held(cloud: TusTarget, path: Path, sha: str) -> bool:
    return cloud.stored(sha) == path.read_bytes()


async def test_small_blob_goes_in_one_request(tmp_path: Path, cloud: TusTarget) -> None:
    path, meta = blob(tmp_path, 10_000)
    uploader = uploader_for(cloud.url, cloud.token, tmp_path / "state.json")
    try:
        outcome = await uploader.upload(path, meta)
    finally:
        await uploader.client.close()
    assert not outcome.skipped
    assert held(cloud, path, meta.sha256)
    methods = [m for _, m, p in cloud.requests if p.startswith("/v1/uploads")]
    if cloud.kind == "ingest":  # creation-with-upload: one request, the bytes sent once
        assert methods == ["POST"] and outcome.bytes_sent == 10_000
    else:  # aiohttp-tus ignores a body on POST: the client sends it again with PATCH
        assert methods == ["POST", "PATCH"] and outcome.bytes_sent == 20_000
    assert uploader.state.upload_path(meta.sha256) is None  # forgotten once complete


async def test_held_blob_is_never_sent(tmp_path: Path, cloud: TusTarget) -> None:
    path, meta = blob(tmp_path, 200_000)
    uploader = uploader_for(cloud.url, cloud.token, tmp_path / "state.json")
    try:
        await uploader.upload(path, meta)
        before = uploader.client.bytes_out
        again = await uploader.upload(path, meta)
    finally:
        await uploader.client.close()
    assert again.skipped and uploader.client.bytes_out == before


async def test_cut_mid_chunk_resumes_and_resends_less_than_a_chunk(
    tmp_path: Path, cloud: TusTarget, emu: LinkEmulator
) -> None:
    path, meta = blob(tmp_path, 10 * CHUNK + 123)
    uploader = uploader_for(emu.url, cloud.token, tmp_path / "state.json")
    try:
        emu.cut_after(3 * CHUNK + CHUNK // 2, Direction.UP)  # in the middle of chunk 4
        with pytest.raises(RetryableUploadError) as cut:
            await uploader.upload(path, meta)
        assert cut.value.unanswered  # no answer at all: the engine probes for the link
        assert uploader.state.upload_path(meta.sha256) is not None
        first_try = uploader.client.bytes_out
        outcome = await uploader.upload(path, meta)
    finally:
        await uploader.client.close()
    assert outcome.resumed_from > 0 and outcome.resumed_from % CHUNK == 0
    resent = first_try + outcome.bytes_sent - path.stat().st_size
    assert 0 <= resent <= CHUNK
    assert held(cloud, path, meta.sha256)


async def test_cut_after_request_before_response(
    tmp_path: Path, cloud: TusTarget, emu: LinkEmulator
) -> None:
    path, meta = blob(tmp_path, 4 * CHUNK)
    uploader = uploader_for(emu.url, cloud.token, tmp_path / "state.json")
    lost = 0
    try:
        for attempt in range(10):  # lose the answers of the first requests
            if attempt < 3:  # the answer to the next upload request (POST or PATCH) is lost
                emu.cut_after(1, Direction.DOWN, min_up_bytes=CHUNK)
            try:
                outcome = await uploader.upload(path, meta)
                break
            except RetryableUploadError:
                lost += 1
    finally:
        await uploader.client.close()
    assert lost == 3
    assert outcome.skipped or outcome.resumed_from > 0
    assert held(cloud, path, meta.sha256)


async def test_restart_resumes_from_the_persisted_upload(
    tmp_path: Path, cloud: TusTarget, emu: LinkEmulator
) -> None:
    path, meta = blob(tmp_path, 6 * CHUNK)
    state = tmp_path / "state.json"
    first = uploader_for(emu.url, cloud.token, state)
    try:
        emu.cut_after(2 * CHUNK + 1000, Direction.UP)
        with pytest.raises(RetryableUploadError):
            await first.upload(path, meta)
    finally:
        await first.client.close()
    second = uploader_for(emu.url, cloud.token, state)  # a new process: only the file remains
    try:
        outcome = await second.upload(path, meta)
    finally:
        await second.client.close()
    assert outcome.resumed_from >= CHUNK
    assert held(cloud, path, meta.sha256)


async def test_flapping_link_finishes_with_retries(
    tmp_path: Path, cloud: TusTarget, emu: LinkEmulator
) -> None:
    emu.conditions.rate_bps = 8_000_000  # 1 MB/s: each chunk takes ~65 ms
    path, meta = blob(tmp_path, 30 * CHUNK)
    uploader = uploader_for(emu.url, cloud.token, tmp_path / "state.json")
    emu.start_flapping(offline_s=0.15, online_s=0.6)
    failures = 0
    try:
        for _ in range(200):
            try:
                await uploader.upload(path, meta)
                break
            except RetryableUploadError:
                failures += 1
                await asyncio.sleep(0.05)
    finally:
        await emu.stop_flapping()
        await uploader.client.close()
    assert failures >= 1
    assert held(cloud, path, meta.sha256)
    assert uploader.client.bytes_out <= path.stat().st_size + (failures + 1) * CHUNK


@asynccontextmanager
async def lying_tus_server(claim: Callable[[int], int]) -> AsyncIterator[str]:
    """A tus server on loopback whose HEAD and PATCH answers claim ``claim(bytes it holds)``.

    It creates uploads and takes bodies like any tus server, but the offset it
    reports may be more than it got: a broken proxy or a server bug.
    """
    held_bytes = 0

    async def create(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=201, headers={"Location": "/v1/uploads/u1"})

    async def head_upload(_request: web.Request) -> web.Response:
        return web.Response(status=200, headers={"Upload-Offset": str(claim(held_bytes))})

    async def patch(request: web.Request) -> web.Response:
        nonlocal held_bytes
        held_bytes += len(await request.read())
        return web.Response(status=204, headers={"Upload-Offset": str(claim(held_bytes))})

    async def head_blob(_request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_post("/v1/uploads/", create)
    app.router.add_route("HEAD", "/v1/uploads/u1", head_upload)
    app.router.add_patch("/v1/uploads/u1", patch)
    app.router.add_route("HEAD", "/v1/blobs/{sha256}", head_blob)
    async with serve_on_loopback(app) as port:
        yield f"http://127.0.0.1:{port}"


async def upload_must_fail(uploader: TusUploader, path: Path, meta: UploadMetadata) -> None:
    """``upload`` raises a RetryableUploadError naming the Upload-Offset, and the next
    try starts a new upload instead of trusting the broken one."""
    try:
        with pytest.raises(RetryableUploadError, match="Upload-Offset"):
            await uploader.upload(path, meta)
    finally:
        await uploader.client.close()
    assert uploader.state.upload_path(meta.sha256) is None


@pytest.mark.parametrize(
    "claim",
    [
        pytest.param(lambda got: got + 10 * CHUNK, id="beyond-the-size"),
        pytest.param(lambda got: got + 1, id="bytes-never-sent"),
    ],
)
async def test_patch_answer_claiming_unsent_bytes_is_an_error_not_a_finished_upload(
    tmp_path: Path, claim: Callable[[int], int]
) -> None:
    path, meta = blob(tmp_path, 3 * CHUNK)
    async with lying_tus_server(claim) as url:
        await upload_must_fail(uploader_for(url, "t", tmp_path / "state.json"), path, meta)


async def test_resume_with_head_offset_beyond_the_size_restarts_not_finishes(
    tmp_path: Path,
) -> None:
    path, meta = blob(tmp_path, 3 * CHUNK)
    async with lying_tus_server(lambda _got: 5 * CHUNK) as url:
        uploader = uploader_for(url, "t", tmp_path / "state.json")
        uploader.state.remember_upload(meta.sha256, "/v1/uploads/u1")  # a crash mid-upload
        await upload_must_fail(uploader, path, meta)


async def test_patch_answers_that_never_advance_fail_instead_of_resending_forever(
    tmp_path: Path,
) -> None:
    """A server (or a proxy dropping bodies) that keeps answering the same offset."""
    path, meta = blob(tmp_path, 3 * CHUNK)
    async with lying_tus_server(lambda _got: 0) as url:
        uploader = uploader_for(url, "t", tmp_path / "state.json")
        try:
            async with asyncio.timeout(10):
                with pytest.raises(RetryableUploadError, match="no progress"):
                    await uploader.upload(path, meta)
        finally:
            await uploader.client.close()
    assert uploader.client.bytes_out == CHUNK  # one chunk, not a link's worth of resends


async def test_an_answer_of_trouble_is_not_a_link_down(tmp_path: Path) -> None:
    """A 503 wraps into a RetryableUploadError that says an answer came (the engine backs
    off; a cut, above, says none came and the engine probes)."""

    async def overloaded(_request: web.Request) -> web.Response:
        return web.json_response({"error": "overloaded", "detail": "later"}, status=503)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", overloaded)
    path, meta = blob(tmp_path, CHUNK)
    async with serve_on_loopback(app) as port:
        uploader = uploader_for(f"http://127.0.0.1:{port}", "token", tmp_path / "state.json")
        try:
            with pytest.raises(RetryableUploadError) as trouble:
                await uploader.upload(path, meta)
        finally:
            await uploader.client.close()
    assert not trouble.value.unanswered


# Offsets asked ahead (sync.offsets_ahead): a resumed upload takes the answer instead of
# its own HEAD; an answer for another path, a dropped one or a failed one is not used.


async def cut_upload(
    tmp_path: Path, uploader: TusUploader, emu: LinkEmulator
) -> tuple[Path, UploadMetadata, str]:
    """An upload of 6 chunks cut in its third: (file, metadata, its upload path)."""
    path, meta = blob(tmp_path, 6 * CHUNK + 99)
    emu.cut_after(2 * CHUNK + CHUNK // 2, Direction.UP)
    with pytest.raises(RetryableUploadError):
        await uploader.upload(path, meta)
    upload_path = uploader.state.upload_path(meta.sha256)
    assert upload_path is not None
    return path, meta, upload_path


def heads(cloud: TusTarget, since: int) -> int:
    return sum(1 for _, m, p in cloud.requests[since:] if m == "HEAD" and "/uploads/" in p)


async def test_a_resumed_upload_takes_the_offset_asked_ahead(
    tmp_path: Path, cloud: TusTarget, emu: LinkEmulator
) -> None:
    uploader = uploader_for(emu.url, cloud.token, tmp_path / "state.json")
    try:
        path, meta, upload_path = await cut_upload(tmp_path, uploader, emu)
        before = len(cloud.requests)
        uploader.offsets_ahead.ask([(meta.sha256, upload_path)])
        outcome = await uploader.upload(path, meta)
    finally:
        await uploader.client.close()
    assert heads(cloud, before) == 1  # the one asked ahead, none of its own
    assert len(uploader.offsets_ahead) == 0  # taken once
    assert outcome.resumed_from >= 2 * CHUNK  # from the server's offset, not from 0
    assert cloud.stored(meta.sha256) == path.read_bytes()


async def test_an_answer_for_another_path_or_dropped_is_not_used(
    tmp_path: Path, cloud: TusTarget, emu: LinkEmulator
) -> None:
    uploader = uploader_for(emu.url, cloud.token, tmp_path / "state.json")
    try:
        path, meta, upload_path = await cut_upload(tmp_path, uploader, emu)
        uploader.offsets_ahead.ask([(meta.sha256, upload_path)])
        assert await uploader.offsets_ahead.take(meta.sha256, upload_path + "x") is None
        uploader.offsets_ahead.ask([(meta.sha256, upload_path)])
        await uploader.offsets_ahead.drop()
        assert len(uploader.offsets_ahead) == 0
        before = len(cloud.requests)
        outcome = await uploader.upload(path, meta)
    finally:
        await uploader.client.close()
    assert heads(cloud, before) == 1  # its own
    assert outcome.resumed_from >= 2 * CHUNK
    assert cloud.stored(meta.sha256) == path.read_bytes()


async def test_a_head_that_failed_ahead_leaves_the_upload_to_ask(
    tmp_path: Path, cloud: TusTarget, emu: LinkEmulator
) -> None:
    uploader = uploader_for(emu.url, cloud.token, tmp_path / "state.json")
    try:
        path, meta, upload_path = await cut_upload(tmp_path, uploader, emu)
        emu.set_online(False)  # the HEAD ahead is refused
        uploader.offsets_ahead.ask([(meta.sha256, upload_path)])
        assert await uploader.offsets_ahead.take(meta.sha256, upload_path) is None
        emu.set_online(True)
        outcome = await uploader.upload(path, meta)
    finally:
        await uploader.client.close()
    assert outcome.resumed_from >= 2 * CHUNK
    assert cloud.stored(meta.sha256) == path.read_bytes()
