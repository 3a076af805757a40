"""The whole ingest service with ``store = s3://...`` (a real SeaweedFS): lake, blobs and
the chunks of tus uploads in progress live in the object store, none on local disk."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pytest

from cloud_ingest.object_store_s3 import S3ObjectStore
from cloud_ingest.settings import IngestSettings
from cloud_ingest.storage import STORAGE
from cloud_ingest.tus.object_chunks import PARTS
from sync.protocol import Stream
from sync.protocol.parquet import STREAM_SCHEMAS
from tests.support.ingest import PARQUET, Ingest, bearer, events_batch, running_ingest
from tests.support.seaweed import SeaweedS3

TUS = {"Tus-Resumable": "1.0.0"}
OCTET = {"Content-Type": "application/offset+octet-stream"}


def s3_settings(tmp_path: Path, seaweed: SeaweedS3) -> IngestSettings:
    return IngestSettings(
        data_dir=tmp_path / "data",
        sweep_interval_s=3600,
        store=seaweed.store_url("ingest-tests", prefix=f"t{secrets.token_hex(6)}"),
        store_access_key_id=seaweed.access_key,
        store_secret_access_key=seaweed.secret_key,  # type: ignore[arg-type]
        store_create_bucket=True,
    )


@pytest.fixture
async def s3_ingest(tmp_path: Path, seaweed: SeaweedS3) -> AsyncIterator[Ingest]:
    async with running_ingest(s3_settings(tmp_path, seaweed)) as running:
        yield running


def _local_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def _checksum(data: bytes) -> str:
    return "sha256 " + base64.b64encode(hashlib.sha256(data).digest()).decode()


async def test_batches_land_in_s3_and_read_in_place(s3_ingest: Ingest) -> None:
    store = s3_ingest.app[STORAGE].store
    assert isinstance(store, S3ObjectStore)
    token = await s3_ingest.device()
    for first in (1, 11, 21):
        batch_id, body = events_batch(first=first, last=first + 9)
        response = await s3_ingest.client.put(
            f"/v1/batches/{batch_id}", data=body, headers=bearer(token) | PARQUET
        )
        assert response.status == 201, await response.text()
    # a re-sent batch is recognised from the lake copy in S3
    response = await s3_ingest.client.put(
        f"/v1/batches/{batch_id}", data=body, headers=bearer(token) | PARQUET
    )
    assert response.status == 200
    assert (await response.json())["duplicate"] is True

    assert _local_files(s3_ingest.settings.lake_dir) == []
    keys = [o.key for o in store.list("lake")]
    assert len(keys) == 3 and all(k.startswith("lake/events/site=yard-a/date=") for k in keys)

    fs, path = store.arrow_location("lake/events")
    dataset = ds.dataset(
        path,
        filesystem=fs,
        format="parquet",
        partitioning="hive",
        schema=STREAM_SCHEMAS[Stream.EVENTS],
    )
    table = dataset.to_table()
    assert sorted(table.column("seq").to_pylist()) == list(range(1, 31))
    # DuckDB reads the same objects (its httpfs extension is not bundled: through pyarrow)
    seqs = duckdb.sql("SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM dataset")
    assert seqs is not None and seqs.fetchall() == [(30, 30, 1, 30)]


async def test_a_tus_upload_is_parts_in_s3_then_one_blob(s3_ingest: Ingest) -> None:
    storage = s3_ingest.app[STORAGE]
    token = await s3_ingest.device()
    data = secrets.token_bytes(300_000)
    sha256 = hashlib.sha256(data).hexdigest()
    meta = "sha256 " + base64.b64encode(sha256.encode()).decode()
    created = await s3_ingest.client.post(
        "/v1/uploads/",
        headers=bearer(token) | TUS | {"Upload-Length": str(len(data)), "Upload-Metadata": meta},
    )
    assert created.status == 201, await created.text()
    location = created.headers["Location"]
    upload_id = location.rstrip("/").rsplit("/", 1)[1]

    first = await s3_ingest.client.patch(
        location,
        data=data[:100_000],
        headers=bearer(token) | TUS | OCTET | {"Upload-Offset": "0"},
    )
    assert first.status == 204, await first.text()
    parts = storage.store.list(f"{PARTS}/{upload_id}")
    assert [(p.key.rsplit("/", 1)[1], p.size) for p in parts] == [(f"{0:020d}", 100_000)]

    # a chunk whose checksum does not match is not kept: the offset stays
    bad = await s3_ingest.client.patch(
        location,
        data=data[100_000:200_000],
        headers=bearer(token)
        | TUS
        | OCTET
        | {"Upload-Offset": "100000", "Upload-Checksum": _checksum(b"other")},
    )
    assert bad.status == 460
    head = await s3_ingest.client.head(location, headers=bearer(token) | TUS)
    assert head.headers["Upload-Offset"] == "100000"
    assert len(storage.store.list(f"{PARTS}/{upload_id}")) == 1

    rest = data[100_000:]
    last = await s3_ingest.client.patch(
        location,
        data=rest,
        headers=bearer(token)
        | TUS
        | OCTET
        | {"Upload-Offset": "100000", "Upload-Checksum": _checksum(rest)},
    )
    assert last.status == 204, await last.text()
    assert last.headers["Upload-Offset"] == str(len(data))
    assert storage.blobs.read(sha256) == data
    assert storage.store.list(f"{PARTS}/{upload_id}") == []
    assert _local_files(s3_ingest.settings.blobs_dir) == []
    assert not any(p.suffix == ".bin" for p in _local_files(s3_ingest.settings.uploads_dir))
    head = await s3_ingest.client.head(f"/v1/blobs/{sha256}", headers=bearer(token))
    assert head.status == 200


async def test_an_upload_whose_whole_is_wrong_leaves_no_blob(s3_ingest: Ingest) -> None:
    storage = s3_ingest.app[STORAGE]
    token = await s3_ingest.device()
    data = secrets.token_bytes(5000)
    claimed = hashlib.sha256(b"not these bytes").hexdigest()
    meta = "sha256 " + base64.b64encode(claimed.encode()).decode()
    created = await s3_ingest.client.post(
        "/v1/uploads/",
        headers=bearer(token) | TUS | {"Upload-Length": str(len(data)), "Upload-Metadata": meta},
    )
    location = created.headers["Location"]
    upload_id = location.rstrip("/").rsplit("/", 1)[1]
    patch = await s3_ingest.client.patch(
        location, data=data, headers=bearer(token) | TUS | OCTET | {"Upload-Offset": "0"}
    )
    assert patch.status == 410, await patch.text()
    assert not storage.blobs.has(claimed)
    assert storage.store.list(f"{PARTS}/{upload_id}") == []
    assert storage.store.list("blobs") == []
