"""The device's own tus client (sync.uploader) against the real ingest service on loopback:
an upload whose whole sha256 does not match is started over, not resent into a 404."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from aiohttp import web

from cloud_ingest.settings import IngestSettings
from sync.cloud_client import CloudClient
from sync.engine_state import EngineStateFile
from sync.errors import RetryableUploadError
from sync.protocol import Stream, UploadMetadata
from sync.uploader import ChunkSizer, TusUploader
from tests.support.ingest import running_ingest

CHUNK = 64 << 10


async def test_device_starts_a_new_upload_when_the_whole_sha256_mismatches(
    settings: IngestSettings, tmp_path: Path
) -> None:
    good = os.urandom(3 * CHUNK + 100)
    sha = hashlib.sha256(good).hexdigest()
    # The copy the blob source handed out for the first attempt is damaged (a bad
    # read); each chunk still carries a correct checksum of what is sent.
    damaged = bytearray(good)
    damaged[10] ^= 0xFF
    path = tmp_path / "frame.jpg"
    path.write_bytes(bytes(damaged))
    meta = UploadMetadata(sha256=sha, stream=Stream.RAW_SAMPLED, seq=7)

    answered: list[tuple[str, int]] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        if request.path.startswith("/v1/uploads"):
            answered.append((request.method, response.status))

    def customize(app: web.Application) -> None:
        app.on_response_prepare.append(record)

    async with running_ingest(settings, customize) as ingest:
        token = await ingest.device()
        client = CloudClient(str(ingest.client.make_url("/")), token, request_timeout_s=5)
        state = EngineStateFile(tmp_path / "state.json")
        uploader = TusUploader(client, state, ChunkSizer(CHUNK, CHUNK, 1.0))
        try:
            with pytest.raises(RetryableUploadError) as failed:
                await uploader.upload(path, meta)
            # The last chunk is sent once; the answer sends the device to a new upload
            # (with 460 it resent the chunk into the deleted upload and got a 404).
            assert answered == [("POST", 201)] + [("PATCH", 204)] * 3 + [("PATCH", 410)]
            assert "upload_sha256_mismatch" in str(failed.value)
            assert state.upload_path(sha) is None  # forgotten: the next try creates one
            path.write_bytes(good)  # the next copy is sound
            answered.clear()
            outcome = await uploader.upload(path, meta)
        finally:
            await client.close()
    assert answered == [("POST", 201)] + [("PATCH", 204)] * 4
    assert outcome.resumed_from == 0 and not outcome.skipped
    assert (settings.blobs_dir / sha[:2] / sha).read_bytes() == good
