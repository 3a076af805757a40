"""tus across instances: two ingest services on one PostgreSQL catalog and one S3 store
(real PostgreSQL and SeaweedFS, real HTTP on loopback).  Any request of an upload may
go to either instance; two PATCHes of one upload at once never both write it."""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import pytest

from cloud_ingest.catalog_postgres import PostgresCatalog
from cloud_ingest.settings import IngestSettings
from cloud_ingest.storage import STORAGE
from cloud_ingest.tus.core import UploadInfo
from cloud_ingest.tus.headers import encode_metadata
from cloud_ingest.tus.state_postgres import PostgresUploadState
from tests.support.ingest import Ingest, bearer, running_ingest
from tests.support.postgres import PostgresServer
from tests.support.seaweed import SeaweedS3

TUS = {"Tus-Resumable": "1.0.0"}
OCTET = {"Content-Type": "application/offset+octet-stream"}


@pytest.fixture
async def catalog_url(postgres: PostgresServer) -> AsyncIterator[str]:
    url = await postgres.create_database()
    try:
        yield url
    finally:
        await postgres.drop_database(url)


@pytest.fixture
async def fleet(
    tmp_path: Path, seaweed: SeaweedS3, catalog_url: str
) -> AsyncIterator[list[Ingest]]:
    """Two instances sharing the catalog and the store; only their spool dirs differ."""
    store = seaweed.store_url("ingest-fleet", prefix=f"t{secrets.token_hex(6)}")
    async with AsyncExitStack() as stack:
        instances = []
        for n in range(2):
            settings = IngestSettings(
                data_dir=tmp_path / f"instance-{n}",
                sweep_interval_s=3600,
                catalog=catalog_url,
                catalog_pool_size=4,
                store=store,
                store_access_key_id=seaweed.access_key,
                store_secret_access_key=seaweed.secret_key,  # type: ignore[arg-type]
                store_create_bucket=True,
            )
            instances.append(await stack.enter_async_context(running_ingest(settings)))
        yield instances


async def _create(ingest: Ingest, token: str, data: bytes) -> str:
    metadata = {"sha256": hashlib.sha256(data).hexdigest(), "stream": "raw"}
    response = await ingest.client.post(
        "/v1/uploads/",
        headers=bearer(token)
        | TUS
        | {"Upload-Length": str(len(data)), "Upload-Metadata": encode_metadata(metadata)},
    )
    assert response.status == 201, await response.text()
    return response.headers["Location"]


async def _offset(ingest: Ingest, token: str, location: str) -> int:
    response = await ingest.client.head(location, headers=bearer(token) | TUS)
    assert response.status == 200, await response.text()
    return int(response.headers["Upload-Offset"])


async def _lease_taken(catalog_url: str, upload_id: str) -> None:
    """Until some instance holds the upload's lease (the database says so)."""
    conn = await asyncpg.connect(catalog_url)
    try:
        async with asyncio.timeout(60):
            while not await conn.fetchval(
                "SELECT lease_token IS NOT NULL FROM tus_uploads WHERE upload_id = $1",
                upload_id,
            ):
                await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def test_a_patch_on_each_instance_at_once_one_wins(
    fleet: list[Ingest], catalog_url: str
) -> None:
    a, b = fleet
    token = await a.device()
    data = secrets.token_bytes(300_000)
    location = await _create(a, token, data)
    upload_id = location.rsplit("/", 1)[1]
    assert await _offset(b, token, location) == 0  # the record is shared

    go_on = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield data[:100_000]
        await go_on.wait()  # held open while the other instance is asked
        yield data[100_000:]

    first = asyncio.create_task(
        a.client.patch(
            location,
            data=slow_body(),
            headers=bearer(token) | TUS | OCTET | {"Upload-Offset": "0"},
        )
    )
    await _lease_taken(catalog_url, upload_id)
    second = await b.client.patch(
        location, data=data, headers=bearer(token) | TUS | OCTET | {"Upload-Offset": "0"}
    )
    assert second.status == 423, await second.text()
    assert second.headers["Retry-After"] == "1"
    # a HEAD on the other instance meanwhile waits for the write to end, then tells its offset
    settled = asyncio.create_task(_offset(b, token, location))
    await asyncio.sleep(0.5)
    go_on.set()
    won = await first
    assert await settled == len(data)
    assert won.status == 204, await won.text()
    assert won.headers["Upload-Offset"] == str(len(data))

    # the loser retries with its stale offset: the upload is complete, so 409 (not a write)
    late = await b.client.patch(
        location, data=data[:10], headers=bearer(token) | TUS | OCTET | {"Upload-Offset": "0"}
    )
    assert late.status == 409, await late.text()
    assert await _offset(b, token, location) == len(data)
    sha256 = hashlib.sha256(data).hexdigest()
    assert await asyncio.to_thread(b.app[STORAGE].blobs.read, sha256) == data
    blob = await b.client.head(f"/v1/blobs/{sha256}", headers=bearer(token))
    assert blob.status == 200


async def test_two_uploaders_racing_across_instances_store_the_bytes_once(
    fleet: list[Ingest], catalog_url: str
) -> None:
    """Two clients push one upload at once, each to a random instance, in different chunk
    sizes, resuming from HEAD after every 409/423: the blob is byte-exact, recorded once."""
    token = await fleet[0].device()
    data = secrets.token_bytes(400_000)
    location = await _create(fleet[1], token, data)
    answers: list[int] = []

    async def uploader(seed: int, chunk: int) -> None:
        rng = random.Random(seed)
        async with asyncio.timeout(100):
            while True:
                offset = await _offset(rng.choice(fleet), token, location)
                if offset == len(data):
                    return
                response = await rng.choice(fleet).client.patch(
                    location,
                    data=data[offset : offset + chunk],
                    headers=bearer(token) | TUS | OCTET | {"Upload-Offset": str(offset)},
                )
                answers.append(response.status)
                assert response.status in (204, 409, 423), await response.text()

    await asyncio.gather(uploader(1, 30_000), uploader(2, 70_000))
    assert 204 in answers
    sha256 = hashlib.sha256(data).hexdigest()
    assert await asyncio.to_thread(fleet[0].app[STORAGE].blobs.read, sha256) == data
    conn = await asyncpg.connect(catalog_url)
    try:
        recorded = await conn.fetch("SELECT upload_id FROM uploads WHERE sha256 = $1", sha256)
        completions = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'upload.complete'"
        )
    finally:
        await conn.close()
    assert [r[0] for r in recorded] == [location.rsplit("/", 1)[1]]
    assert completions == 1


async def test_expired_uploads_are_swept_from_the_shared_state(
    fleet: list[Ingest], tmp_path: Path
) -> None:
    """An upload created on one instance, expired, is removed by another instance's sweeper:
    its record in PostgreSQL and its chunk objects both."""
    a, _ = fleet
    token = await a.device()
    location = await _create(a, token, b"x" * 1000)
    upload_id = location.rsplit("/", 1)[1]
    first = await a.client.patch(
        location, data=b"x" * 400, headers=bearer(token) | TUS | OCTET | {"Upload-Offset": "0"}
    )
    assert first.status == 204, await first.text()
    store = a.app[STORAGE].store
    assert store.list(f"tus-parts/{upload_id}")  # its first part
    sweeping = a.settings.model_copy(
        update={"data_dir": tmp_path / "sweeper", "sweep_interval_s": 0.05}
    )
    async with running_ingest(sweeping) as sweeper:
        sweeper.clock.now = a.clock() + a.settings.upload_expiry_s + 1
        async with asyncio.timeout(60):
            while (await a.client.head(location, headers=bearer(token) | TUS)).status != 404:
                await asyncio.sleep(0.05)
    assert await asyncio.to_thread(store.list, f"tus-parts/{upload_id}") == []


async def test_a_lease_is_renewed_while_held_and_runs_out_when_its_holder_dies(
    catalog_url: str,
) -> None:
    catalog = await PostgresCatalog.open(catalog_url, pool_size=2)  # migrates
    try:
        state = PostgresUploadState(lease_s=3.0)
        state.bind(catalog.pool)
        await state.save(UploadInfo("a" * 32, "gate-01", 10, expires_at=1e12))
        async with state.lease("a" * 32):
            await asyncio.sleep(7.0)  # past two lease periods: renewed meanwhile
            assert not await state.claim("a" * 32, "another")
            assert await state.is_leased("a" * 32)
        assert not await state.is_leased("a" * 32)  # released at the end of the block
        assert await state.claim("a" * 32, "dies")  # an instance that never releases it
        assert not await state.claim("a" * 32, "another")
        async with asyncio.timeout(60):
            while not await state.claim("a" * 32, "another"):
                await asyncio.sleep(0.2)
        assert not await state.renew("a" * 32, "dies")  # the dead holder's lease is gone
    finally:
        await catalog.close()
