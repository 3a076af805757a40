"""Fencing a stalled tus writer (real PostgreSQL and SeaweedFS): writer A takes an
upload's lease, stalls past its expiry (no renewal, as a paused instance), writer B
takes the upload over and appends; A's late part is refused -- at the stale offset and
at the right one alike -- its object is removed, and the upload's bytes are exactly B's."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import StreamReader
from aiohttp.base_protocol import BaseProtocol

from cloud_ingest.blobs import BlobStore
from cloud_ingest.catalog_postgres import PostgresCatalog
from cloud_ingest.object_store_s3 import S3ObjectStore
from cloud_ingest.tus.core import PatchPlan, UploadInfo
from cloud_ingest.tus.fencing import LeaseLost, holding
from cloud_ingest.tus.object_chunks import PARTS, ObjectChunks
from cloud_ingest.tus.state_postgres import PostgresUploadState
from tests.support.postgres import PostgresServer
from tests.support.seaweed import SeaweedS3

UPLOAD = "f" * 32
LENGTH = 2_000


@pytest.fixture
async def catalog(postgres: PostgresServer) -> AsyncIterator[PostgresCatalog]:
    url = await postgres.create_database()
    catalog = await PostgresCatalog.open(url, pool_size=4)  # migrates
    try:
        yield catalog
    finally:
        await catalog.close()
        await postgres.drop_database(url)


@pytest.fixture
def store(seaweed: SeaweedS3) -> S3ObjectStore:
    return seaweed.store("ingest-fencing", prefix=f"t{secrets.token_hex(6)}")


def _body(data: bytes) -> StreamReader:
    """A request body as aiohttp hands it to a handler, already complete."""
    loop = asyncio.get_running_loop()
    reader = StreamReader(BaseProtocol(loop), 1 << 16, loop=loop)
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def _writer(
    catalog: PostgresCatalog, store: S3ObjectStore, spool: Path, lease_s: float
) -> tuple[PostgresUploadState, ObjectChunks]:
    """One instance's view of the upload: its state (own lease length) and chunk code."""
    state = PostgresUploadState(lease_s=lease_s)
    state.bind(catalog.pool)
    return state, ObjectChunks(store, spool, state)


async def test_a_stalled_writers_late_part_is_refused_and_the_bytes_are_the_new_writers(
    catalog: PostgresCatalog, store: S3ObjectStore, tmp_path: Path
) -> None:
    state_a, chunks_a = _writer(catalog, store, tmp_path / "a", lease_s=1.0)
    state_b, chunks_b = _writer(catalog, store, tmp_path / "b", lease_s=30.0)
    await state_a.save(UploadInfo(UPLOAD, "gate-01", LENGTH, expires_at=1e12))
    from_a, from_b = secrets.token_bytes(1_000), secrets.token_bytes(LENGTH)

    lease_a = await state_a.claim(UPLOAD, "writer-a")
    assert lease_a is not None
    assert await state_b.claim(UPLOAD, "writer-b") is None  # held by A
    async with asyncio.timeout(30):  # A stalls: no renewal, its lease runs out
        while await state_b.is_leased(UPLOAD):
            await asyncio.sleep(0.1)

    async with state_b.lease(UPLOAD):  # B takes over and appends the first half
        assert await asyncio.to_thread(chunks_b.offset, UPLOAD) == 0
        plan = PatchPlan(offset=0, limit=LENGTH, new_length=None)
        assert await chunks_b.receive(UPLOAD, _body(from_b[:1_000]), plan, None) == 1_000

    with holding(lease_a):  # A wakes and commits what it spooled, at its stale offset
        stale = PatchPlan(offset=0, limit=LENGTH, new_length=None)
        with pytest.raises(LeaseLost) as refused:
            await chunks_a.receive(UPLOAD, _body(from_a), stale, None)
        assert refused.value.status == 409 and refused.value.retryable
        # nor may it append at the right offset: the token, not the offset, fences it
        right = PatchPlan(offset=1_000, limit=LENGTH - 1_000, new_length=None)
        with pytest.raises(LeaseLost):
            await chunks_a.receive(UPLOAD, _body(from_a), right, None)

    async with state_b.lease(UPLOAD):  # B goes on from its offset and finishes
        assert await asyncio.to_thread(chunks_b.offset, UPLOAD) == 1_000
        plan = PatchPlan(offset=1_000, limit=LENGTH - 1_000, new_length=None)
        assert await chunks_b.receive(UPLOAD, _body(from_b[1_000:]), plan, None) == LENGTH
        keys = await asyncio.to_thread(chunks_b.part_keys, UPLOAD)
        # only B's two parts exist: A's refused objects were removed
        listed = await asyncio.to_thread(store.list, f"{PARTS}/{UPLOAD}")
        assert [o.key for o in listed] == keys and len(keys) == 2
        sha256 = hashlib.sha256(from_b).hexdigest()
        blobs = BlobStore(store)
        await asyncio.to_thread(chunks_b.assemble_blob, UPLOAD, blobs, sha256)
    assert await asyncio.to_thread(blobs.read, sha256) == from_b
    assert not await asyncio.to_thread(chunks_b.has_data, UPLOAD)  # joined, parts gone
    assert await asyncio.to_thread(store.list, f"{PARTS}/{UPLOAD}") == []


async def test_a_part_without_a_lease_counts_only_while_no_one_holds_the_upload(
    catalog: PostgresCatalog, store: S3ObjectStore, tmp_path: Path
) -> None:
    """A creation with a body writes before any lease exists: it may not slip past one."""
    state, chunks = _writer(catalog, store, tmp_path / "a", lease_s=30.0)
    await state.save(UploadInfo(UPLOAD, "gate-01", LENGTH, expires_at=1e12))
    plan = PatchPlan(offset=0, limit=LENGTH, new_length=None)
    assert await state.claim(UPLOAD, "someone") is not None
    with pytest.raises(LeaseLost):
        await chunks.receive(UPLOAD, _body(b"x" * 10), plan, None)
    await state.release(UPLOAD, "someone")
    assert await chunks.receive(UPLOAD, _body(b"x" * 10), plan, None) == 10
    assert await asyncio.to_thread(chunks.offset, UPLOAD) == 10
