"""Crash safety of the upload file store: offsets come from the bytes on disk."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from cloud_ingest.tus.pending import PendingChunk
from tests.cloud_ingest.tus_fixtures import (
    OCTET,
    FakeClock,
    auth,
    create,
    metadata_header,
    start_tus,
)


@pytest.mark.parametrize("guard", ["xattr", "marker"])
async def test_restart_derives_offset_from_disk_and_drops_side_files(
    tmp_path: Path, guard: str
) -> None:
    clock = FakeClock()
    data = os.urandom(200_000)
    digest = hashlib.sha256(data).hexdigest()
    async with aiohttp.ClientSession() as session:
        async for tus in start_tus(tmp_path, clock, guard=guard):
            url = await create(
                session, tus, len(data), **{"Upload-Metadata": metadata_header({"sha256": digest})}
            )
            hdrs = auth(**{"Upload-Offset": "0", "Content-Type": OCTET})
            async with session.patch(url, data=io.BytesIO(data[:50_000]), headers=hdrs) as r:
                assert r.status == 204
            upload_id = url.rsplit("/", 1)[1]
            # what a crash can leave: more bytes on disk than any answer said,
            # then a half-written checksummed chunk, a temp info file
            with tus.store.data_path(upload_id).open("ab") as f:
                f.write(data[50_000:70_000])
            chunk = PendingChunk(70_000, 30_000, "sha256", hashlib.sha256(data[70_000:]).digest())
            with tus.store.data_path(upload_id).open("r+b") as f:
                tus.store.guard.arm(upload_id, f, chunk)
                f.seek(70_000)
                f.write(b"unverified garbage")
            (tus.store.root / f"{upload_id}.info.tmp").write_text("{")
        async for tus in start_tus(tmp_path, clock, guard=guard):
            assert not tus.store.pending_path(upload_id).exists()
            new_url = str(tus.server.make_url(f"/v1/uploads/{upload_id}"))
            async with session.head(new_url, headers=auth()) as r:
                assert r.headers["Upload-Offset"] == "70000"
            hdrs = auth(**{"Upload-Offset": "70000", "Content-Type": OCTET})
            async with session.patch(new_url, data=io.BytesIO(data[70_000:]), headers=hdrs) as r:
                assert r.status == 204
            assert tus.blobs.path_for(digest).read_bytes() == data
            assert tus.completed[0].sha256 == digest


@pytest.mark.parametrize("completion_saved", [True, False])
async def test_completion_lost_in_a_crash_is_reported_at_the_next_head(
    tmp_path: Path, completion_saved: bool
) -> None:
    clock = FakeClock()
    data = b"raw frame bytes"
    digest = hashlib.sha256(data).hexdigest()
    async with aiohttp.ClientSession() as session:
        async for tus in start_tus(tmp_path, clock):
            url = await create(
                session, tus, len(data), **{"Upload-Metadata": metadata_header({"sha256": digest})}
            )
            upload_id = url.rsplit("/", 1)[1]
            hdrs = auth(**{"Upload-Offset": "0", "Content-Type": OCTET})
            async with session.patch(url, data=data, headers=hdrs) as r:
                assert r.status == 204
            assert len(tus.completed) == 1
            info = tus.store.get(upload_id)
            assert info is not None
            assert info.notified
            # as if the process died after adopting the blob (before or after
            # saving the completion) and before on_complete returned
            tus.store.save(replace(info, completed=completion_saved, notified=False))
        async for tus in start_tus(tmp_path, clock):
            assert tus.completed == []
            new_url = str(tus.server.make_url(f"/v1/uploads/{upload_id}"))
            async with session.head(new_url, headers=auth()) as r:
                assert r.headers["Upload-Offset"] == str(len(data))
            assert [(c.upload_id, c.sha256) for c in tus.completed] == [(upload_id, digest)]
            assert tus.completed[0].blob_path == tus.blobs.path_for(digest)
            async with session.head(new_url, headers=auth()) as r:
                assert r.status == 200
            assert len(tus.completed) == 1
