"""Refused raw uploads: a refusal a new upload fixes is retried, never a dropped raw
frame; a blob whose device copy is damaged is given up once, counted and logged,
not re-uploaded without end.  Against the REAL ingest service on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from sync.errors import PermanentUploadError, RetryableUploadError
from sync.outbox import BlobRef, Outbox
from sync.protocol import Stream, UploadMetadata
from sync.uploader import BlobCopyDamaged
from tests.support.uploader import CHUNK, uploader_for
from tests.sync.engine_harness import append_events, drained, engine_for, wait_for
from tests.sync.ingest_server import BlobDir, lake_seqs, running_ingest
from tests.sync.tus_servers import serve_on_loopback, stored_blob

MARKER = b"<<flip-me-on-the-wire>>"


@dataclass
class _Flip:
    armed: bool = True


@asynccontextmanager
async def wire_flipping_one_body(target_port: int) -> AsyncIterator[str]:
    """A TCP proxy on loopback that changes the first ``MARKER`` going up (once, one
    byte): a body damaged in transit, after the device computed its checksum."""
    flip = _Flip()
    damaged = MARKER[:-1] + b"!"

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held = b""
        while data := await reader.read(1 << 16):
            data = held + data
            if flip.armed and MARKER in data:
                data, flip.armed = data.replace(MARKER, damaged, 1), False
            keep = _marker_prefix_at_end(data) if flip.armed else 0
            held = data[len(data) - keep :]
            writer.write(data[: len(data) - keep])
            await writer.drain()
        writer.write(held)
        writer.close()

    async def downstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        writer.close()

    handlers: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        handlers.add(handler)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        writers.extend((writer, up_writer))
        try:
            await asyncio.gather(upstream(reader, up_writer), downstream(up_reader, writer))
        except ConnectionError:
            pass
        finally:
            for each in (writer, up_writer):
                each.close()
                with contextlib.suppress(ConnectionError):
                    await each.wait_closed()

    server = await asyncio.start_server(connect, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for writer in writers:  # the pumps see the end of their streams and return
            writer.transport.abort()
        await asyncio.gather(*handlers)
        await server.wait_closed()


def _marker_prefix_at_end(data: bytes) -> int:
    """How many bytes at the end of ``data`` could begin ``MARKER`` (hold them back)."""
    for size in range(min(len(MARKER) - 1, len(data)), 0, -1):
        if data.endswith(MARKER[:size]):
            return size
    return 0


def blob_with_marker(tmp_path: Path, size: int) -> tuple[Path, UploadMetadata]:
    data = MARKER + os.urandom(size - len(MARKER))
    path = tmp_path / "frame.jpg"
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    return path, UploadMetadata(sha256=sha, stream=Stream.RAW_SAMPLED, seq=3, filename="f.jpg")


def damaged_copy(tmp_path: Path, size: int) -> tuple[Path, UploadMetadata]:
    """A file stored under the sha256 of its original bytes, one byte since changed."""
    original = os.urandom(size)
    path = tmp_path / "frame.jpg"
    path.write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])
    sha = hashlib.sha256(original).hexdigest()
    return path, UploadMetadata(sha256=sha, stream=Stream.RAW_SAMPLED, seq=4, filename="f.jpg")


# ---------------------------------------------------------------- the uploader


async def test_inline_body_damaged_in_transit_is_retried_as_a_new_upload(tmp_path: Path) -> None:
    """Creation-with-upload whose body is changed on the wire: the server answers 460
    (checksum of the inline body).  That is the link's fault, not the blob's."""
    path, meta = blob_with_marker(tmp_path, 10_000)
    async with (
        running_ingest(tmp_path / "cloud") as cloud,
        wire_flipping_one_body(cloud.port) as url,
    ):
        uploader = uploader_for(url, cloud.token, tmp_path / "state.json")
        try:
            with pytest.raises(RetryableUploadError, match="460"):
                await uploader.upload(path, meta)
            outcome = await uploader.upload(path, meta)
        finally:
            await uploader.client.close()
        assert not outcome.skipped
        assert stored_blob(cloud.settings.data_dir, meta.sha256) == path.read_bytes()


@pytest.mark.parametrize("size", [10_000, 3 * CHUNK + 5], ids=["inline", "chunked"])
async def test_damaged_device_copy_is_sent_once_then_refused_locally(
    tmp_path: Path, size: int
) -> None:
    """The server's 410 upload_sha256_mismatch, and the device's copy hashes wrong too.
    The blob source may hand out a sound copy next time, so that call is retryable;
    but the next copy is hashed first, and damaged again it is ``BlobCopyDamaged``
    with no byte sent (it used to be sent again at every try: 410 without end; and
    inline, a plain refusal the engine skipped)."""
    path, meta = damaged_copy(tmp_path, size)
    async with running_ingest(tmp_path / "cloud") as cloud:
        uploader = uploader_for(cloud.url, cloud.token, tmp_path / "state.json")
        try:
            with pytest.raises(RetryableUploadError, match="copy of blob .* is damaged"):
                await uploader.upload(path, meta)
            sent = uploader.client.bytes_out
            with pytest.raises(BlobCopyDamaged, match="damaged"):
                await uploader.upload(path, meta)
        finally:
            await uploader.client.close()
        assert uploader.client.bytes_out == sent == size
        assert stored_blob(cloud.settings.data_dir, meta.sha256) is None
        creations = [m for _, m, p in cloud.requests if m == "POST"]
        assert len(creations) == 1
    assert uploader.state.upload_path(meta.sha256) is None


async def test_sound_copy_after_a_misread_chunk_is_retried(tmp_path: Path) -> None:
    """410 upload_sha256_mismatch while the device's copy hashes right (the first chunk
    was read wrong, the file is fine now): a new upload, as before."""
    original = os.urandom(3 * CHUNK + 5)
    path = tmp_path / "frame.jpg"
    path.write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])  # damaged for chunk 1
    meta = UploadMetadata(
        sha256=hashlib.sha256(original).hexdigest(), stream=Stream.RAW_SAMPLED, filename="f.jpg"
    )

    @web.middleware
    async def heal_on_first_patch(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method == "PATCH":
            path.write_bytes(original)  # chunk 1 already left with the bad byte
        return await handler(request)

    async with running_ingest(tmp_path / "cloud", middlewares=[heal_on_first_patch]) as cloud:
        uploader = uploader_for(cloud.url, cloud.token, tmp_path / "state.json")
        try:
            with pytest.raises(RetryableUploadError, match="upload_sha256_mismatch"):
                await uploader.upload(path, meta)
            await uploader.upload(path, meta)
        finally:
            await uploader.client.close()
        assert stored_blob(cloud.settings.data_dir, meta.sha256) == original


@asynccontextmanager
async def refusing_tus_server(status: int, error: str) -> AsyncIterator[str]:
    """A tus server on loopback that answers every creation with ``status``/``error``."""

    async def create(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"error": error, "detail": "test"}, status=status)

    async def head_blob(_request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_post("/v1/uploads/", create)
    app.router.add_route("HEAD", "/v1/blobs/{sha256}", head_blob)
    async with serve_on_loopback(app) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (460, "checksum_mismatch", RetryableUploadError),
        (410, "gone", RetryableUploadError),
        (404, "not_found", RetryableUploadError),
        (409, "conflict", RetryableUploadError),
        (410, "upload_sha256_mismatch", RetryableUploadError),  # the copy is sound
        (413, "payload_too_large", PermanentUploadError),
        (400, "bad_request", PermanentUploadError),
        (415, "unsupported_media_type", PermanentUploadError),
    ],
)
async def test_refused_inline_upload_retries_unless_the_blob_is_unwelcome(
    tmp_path: Path, status: int, error: str, expected: type[Exception]
) -> None:
    path, meta = blob_with_marker(tmp_path, 10_000)
    async with refusing_tus_server(status, error) as url:
        uploader = uploader_for(url, "t", tmp_path / "state.json")
        try:
            with pytest.raises(expected) as raised:
                await uploader.upload(path, meta)
        finally:
            await uploader.client.close()
    assert type(raised.value) is expected


# ---------------------------------------------------------------- the engine


async def test_engine_delivers_a_small_frame_whose_body_was_damaged_in_transit(
    tmp_path: Path, outbox: Outbox
) -> None:
    """The 460 on the creating POST is retried in the same run; the frame is delivered
    and acked (it used to be skipped until the next restart, holding the stream)."""
    blobs = BlobDir(tmp_path / "blobs")
    ref = blobs.add(MARKER + os.urandom(10_000), seq=1)
    await outbox.append_blob_ref(Stream.RAW_SAMPLED, ref)
    async with (
        running_ingest(tmp_path / "cloud") as cloud,
        wire_flipping_one_body(cloud.port) as url,
        engine_for(tmp_path, outbox, url, cloud.token, blobs) as (engine, _),
    ):
        await wait_for(drained(outbox, Stream.RAW_SAMPLED))
        assert engine.raw.skipped(Stream.RAW_SAMPLED) == 0
        assert stored_blob(cloud.settings.data_dir, ref.sha256) is not None
        posts = [p for _, m, p in cloud.requests if m == "POST" and p.startswith("/v1/uploads")]
        assert len(posts) == 2  # refused once (460), then accepted


@pytest.mark.parametrize("size", [10_000, 200_000], ids=["inline", "chunked"])
async def test_engine_gives_up_a_damaged_copy_once_and_the_stream_goes_on(
    tmp_path: Path, outbox: Outbox, caplog: pytest.LogCaptureFixture, size: int
) -> None:
    seqs = await append_events(outbox, 30)
    blobs = BlobDir(tmp_path / "blobs")
    damaged = blobs.add(os.urandom(size), seq=1)
    stored = blobs.root / damaged.sha256
    data = stored.read_bytes()
    stored.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])  # bit rot on the device
    sound = blobs.add(os.urandom(size), seq=2)
    for ref in (damaged, sound):
        await outbox.append_blob_ref(Stream.RAW_SAMPLED, ref)
    caplog.set_level(logging.ERROR, "sync")
    async with running_ingest(tmp_path / "cloud") as cloud:
        async with engine_for(
            tmp_path,
            outbox,
            cloud.url,
            cloud.token,
            blobs,
            chunk_min_bytes=64 << 10,
            chunk_max_bytes=64 << 10,
        ) as (engine, _):
            await wait_for(drained(outbox, Stream.EVENTS, Stream.RAW_SAMPLED))
            await asyncio.sleep(0.3)  # time enough to send it again, were it retried
            assert engine.raw.given_up[Stream.RAW_SAMPLED] == 1
            assert damaged.sha256 not in engine.raw_uploads.blob_bytes  # no byte count kept for it
            progress = engine.progress().classes  # what /v1/sync and /v1/status show
            assert progress[Stream.RAW_SAMPLED].given_up_records == 1
            assert progress[Stream.RAW_SAMPLED].skipped_records == 0
        assert stored_blob(cloud.settings.data_dir, sound.sha256) is not None
        assert stored_blob(cloud.settings.data_dir, damaged.sha256) is None
        assert sorted(lake_seqs(cloud.settings.data_dir, Stream.EVENTS)) == seqs
        creations = [m for _, m, p in cloud.requests if m == "POST" and p == "/v1/uploads/"]
        assert len(creations) == 2  # one for each blob: the damaged one is not sent again
    given_up = [r for r in caplog.records if "given up" in r.getMessage()]
    assert len(given_up) == 1 and damaged.sha256[:12] in given_up[0].getMessage()


async def test_a_raw_request_for_a_damaged_copy_is_reported_unavailable(
    tmp_path: Path, outbox: Outbox
) -> None:
    blobs = BlobDir(tmp_path / "blobs")
    ref = blobs.add(os.urandom(20_000), seq=9)
    (blobs.root / ref.sha256).write_bytes(os.urandom(20_000))  # no longer its bytes
    async with running_ingest(tmp_path / "cloud") as cloud:
        await cloud.add_raw_request("rr-9", seq=9)
        async with engine_for(tmp_path, outbox, cloud.url, cloud.token, blobs) as (engine, _):
            await wait_for(
                lambda: (
                    engine.raw.given_up[Stream.RAW_REQUESTED] == 1
                    and not engine.state.state.raw_requests
                )
            )
            assert engine.state.state.unknown == ["rr-9"]
            engine.sync_now()
            await wait_for(lambda: not engine.state.state.unknown)
        assert await cloud.raw_request_state("rr-9") == "unavailable"
        assert outbox.stats().per_class[Stream.RAW_REQUESTED].records == 0


@dataclass
class FirstCopyDamaged(BlobDir):
    """Hands out a temporary copy per attempt, like the appliance's blob source; the
    first copy is damaged (a bad read), the ones after it are sound."""

    copies: int = 0

    async def open_for_upload(self, ref: BlobRef) -> Path:
        stored = await super().open_for_upload(ref)
        self.copies += 1
        data = stored.read_bytes()
        if self.copies == 1:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        copy = self.root.parent / f"copy-{self.copies}"
        copy.write_bytes(data)
        return copy


async def test_engine_sends_a_sound_copy_after_a_damaged_one(
    tmp_path: Path, outbox: Outbox
) -> None:
    """A damaged copy is not the blob: the next attempt's sound copy is delivered."""
    blobs = FirstCopyDamaged(tmp_path / "blobs")
    ref = blobs.add(os.urandom(200_000), seq=1)
    await outbox.append_blob_ref(Stream.RAW_SAMPLED, ref)
    async with (
        running_ingest(tmp_path / "cloud") as cloud,
        engine_for(tmp_path, outbox, cloud.url, cloud.token, blobs) as (engine, _),
    ):
        await wait_for(drained(outbox, Stream.RAW_SAMPLED))
        assert engine.raw.given_up[Stream.RAW_SAMPLED] == 0
        assert blobs.copies == 2
        stored = stored_blob(cloud.settings.data_dir, ref.sha256)
        assert stored is not None and hashlib.sha256(stored).hexdigest() == ref.sha256


async def test_a_raw_record_whose_blob_is_gone_is_skipped_and_shown_in_progress(
    tmp_path: Path, outbox: Outbox
) -> None:
    """A blob removed from the store under its record: passed over (kept in the outbox
    for the next start), counted where the technician looks, and the stream goes on."""
    blobs = BlobDir(tmp_path / "blobs")
    gone = blobs.add(os.urandom(1000))
    (blobs.root / gone.sha256).unlink()
    present = blobs.add(os.urandom(1000))
    for ref in (gone, present):
        await outbox.append_blob_ref(Stream.RAW_SAMPLED, ref)
    async with (
        running_ingest(tmp_path / "cloud") as cloud,
        engine_for(tmp_path, outbox, cloud.url, cloud.token, blobs) as (engine, _),
    ):
        await wait_for(lambda: stored_blob(cloud.settings.data_dir, present.sha256) is not None)
        progress = engine.progress().classes[Stream.RAW_SAMPLED]
        assert (progress.skipped_records, progress.given_up_records) == (1, 0)
        assert engine.progress().classes[Stream.EVENTS].skipped_records == 0
    kept = [BlobRef.from_bytes(r.payload).sha256 for r in outbox.read(Stream.RAW_SAMPLED)]
    assert kept == [gone.sha256, present.sha256]  # acks wait for the skipped record below
