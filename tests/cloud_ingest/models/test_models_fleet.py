"""Model releases in fleet mode: two ingest instances on one PostgreSQL catalog and one
S3 store (real PostgreSQL and SeaweedFS, real HTTP on loopback).  A release published
through one instance is downloaded from the other, whole and resumed with Range, so a
model download is "any request to any instance" like the rest of the protocol."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from appliance.updates.download import HttpFetcher
from cloud_ingest.models.registry import artifact_key
from cloud_ingest.settings import IngestSettings
from cloud_ingest.storage import STORAGE
from tests.support.ingest import Ingest, bearer, running_ingest
from tests.support.model_registry import Kit, publish
from tests.support.postgres import PostgresServer
from tests.support.seaweed import SeaweedS3

YARDLINK = str(Path(sys.executable).parent / "yardlink")


@pytest.fixture
async def fleet(
    tmp_path: Path, seaweed: SeaweedS3, postgres: PostgresServer, kit: Kit
) -> AsyncIterator[list[Ingest]]:
    """Two instances sharing the catalog and the store; their data dirs differ."""
    catalog = await postgres.create_database()
    store = seaweed.store_url("ingest-models", prefix=f"t{secrets.token_hex(6)}")
    try:
        async with AsyncExitStack() as stack:
            instances = []
            for n in range(2):
                settings = IngestSettings(
                    data_dir=tmp_path / f"instance-{n}",
                    sweep_interval_s=3600,
                    release_keyring_file=kit.keyring_file,
                    catalog=catalog,
                    catalog_pool_size=4,
                    store=store,
                    store_access_key_id=seaweed.access_key,
                    store_secret_access_key=seaweed.secret_key,  # type: ignore[arg-type]
                    store_create_bucket=True,
                )
                instances.append(await stack.enter_async_context(running_ingest(settings)))
            yield instances
    finally:
        await postgres.drop_database(catalog)


async def test_published_on_one_instance_downloaded_from_the_other(
    fleet: list[Ingest], kit: Kit
) -> None:
    a, b = fleet
    operator, device = await a.operator(), await a.device("gate-01", "wh-nyc-01")
    artifact = kit.build.archive.read_bytes()
    sha = kit.manifest.artifact.sha256
    response = await publish(a, operator, kit.signed, artifact)
    assert response.status == 201, await response.text()
    # the artifact is an object of the shared store, in neither instance's data dir
    assert a.app[STORAGE].store.get(artifact_key(sha)) == artifact
    for instance in fleet:
        assert not list((instance.settings.data_dir / "models").rglob(sha))
    # the same release through the other instance is the idempotent re-publish
    assert (await publish(b, operator, kit.signed, artifact)).status == 200

    base = f"/v1/models/gate-ocr/{kit.manifest.version}"
    manifest = await b.client.get(f"{base}/manifest", headers=bearer(device))
    assert manifest.status == 200 and await manifest.read() == kit.signed
    whole = await b.client.get(f"{base}/artifact", headers=bearer(device))
    assert whole.status == 200 and await whole.read() == artifact
    cut, size = 12_345, len(artifact)
    tail = await b.client.get(
        f"{base}/artifact", headers=bearer(device) | {"Range": f"bytes={cut}-"}
    )
    assert tail.status == 206, await tail.text()
    assert tail.headers["Content-Range"] == f"bytes {cut}-{size - 1}/{size}"
    assert await tail.read() == artifact[cut:]
    middle = await b.client.get(
        f"{base}/artifact", headers=bearer(device) | {"Range": "bytes=100-199"}
    )
    assert middle.status == 206 and await middle.read() == artifact[100:200]
    suffix = await b.client.get(f"{base}/artifact", headers=bearer(device) | {"Range": "bytes=-50"})
    assert suffix.status == 206 and await suffix.read() == artifact[-50:]
    past = await b.client.get(
        f"{base}/artifact", headers=bearer(device) | {"Range": f"bytes={size}-"}
    )
    assert past.status == 416 and past.headers["Content-Range"] == f"bytes */{size}"
    broken = await b.client.get(
        f"{base}/artifact", headers=bearer(device) | {"Range": "bytes=oops"}
    )
    assert broken.status == 416


async def test_a_cut_download_resumes_on_the_other_instance(fleet: list[Ingest], kit: Kit) -> None:
    a, b = fleet
    operator, device = await a.operator(), await a.device("gate-01", "wh-nyc-01")
    artifact = kit.build.archive.read_bytes()
    assert (await publish(a, operator, kit.signed, artifact)).status == 201
    url = f"/v1/models/gate-ocr/{kit.manifest.version}/artifact"
    received = bytearray()
    pieces = HttpFetcher(str(a.client.make_url("")), device).stream(url, 0)
    async for position, piece in pieces:
        assert position == len(received)
        received += piece
        if len(received) >= 200_000:
            break  # the link to instance a is cut
    await pieces.aclose()
    cut = len(received)
    assert 0 < cut < len(artifact)
    async for position, piece in HttpFetcher(str(b.client.make_url("")), device).stream(url, cut):
        assert position == len(received)  # resumed at the cut on instance b
        received += piece
    assert hashlib.sha256(received).hexdigest() == kit.manifest.artifact.sha256


async def test_the_cli_publishes_into_the_store_every_instance_serves(
    tmp_path: Path, kit: Kit, fleet: list[Ingest]
) -> None:
    """``yardlink ingest models publish --config`` naming the fleet's catalog and store puts
    the artifact in the store: an instance that never saw the publish serves it."""
    settings = fleet[0].settings
    secret = settings.store_secret_access_key
    assert settings.catalog is not None and settings.store is not None and secret is not None
    config = tmp_path / "cli.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "cli-data"}"\ncatalog = "{settings.catalog}"\n'
        f'store = "{settings.store}"\nstore_access_key_id = "{settings.store_access_key_id}"\n'
        f'store_secret_access_key = "{secret.get_secret_value()}"\n'
    )
    manifest = tmp_path / "release.manifest.json"
    manifest.write_bytes(kit.signed)
    published = await asyncio.to_thread(
        subprocess.run,
        [YARDLINK, "ingest", "models", "publish", str(kit.build.archive),
         "--manifest", str(manifest), "--keyring", str(kit.keyring_file), "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    assert not list((tmp_path / "cli-data").rglob(kit.manifest.artifact.sha256))
    device = await fleet[1].device("gate-01", "wh-nyc-01")
    url = f"/v1/models/gate-ocr/{kit.manifest.version}/artifact"
    whole = await fleet[1].client.get(url, headers=bearer(device))
    assert whole.status == 200 and await whole.read() == kit.build.archive.read_bytes()
