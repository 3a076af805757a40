"""The object-store interface, one suite over both implementations: a directory and S3.

S3 is a real SeaweedFS server (the session's ``seaweed`` fixture); each test
gets a prefix of its own in one bucket.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from cloud_ingest import object_store_s3
from cloud_ingest.errors import BadRequest, ChecksumMismatch
from cloud_ingest.object_store import (
    LocalObjectStore,
    ObjectInfo,
    ObjectStore,
    ObjectStoreUnavailable,
    check_key,
)
from cloud_ingest.object_store_s3 import S3ObjectStore, parse_s3_url
from tests.support.seaweed import SeaweedS3


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "data")
    server: SeaweedS3 = request.getfixturevalue("seaweed")
    return server.store("store-tests", prefix=f"t{secrets.token_hex(6)}")


def test_put_get_size_list_delete(store: ObjectStore) -> None:
    store.put("lake/events/site=a/date=2026-12-01/one.parquet", b"one")
    store.put("lake/events/site=a/date=2026-12-02/two.parquet", b"two!")
    store.put("blobs/ab/abc", b"blob")
    assert store.get("lake/events/site=a/date=2026-12-01/one.parquet") == b"one"
    assert store.size("lake/events/site=a/date=2026-12-02/two.parquet") == 4
    assert store.size("lake/events/none.parquet") is None
    assert store.list("lake") == [
        ObjectInfo("lake/events/site=a/date=2026-12-01/one.parquet", 3),
        ObjectInfo("lake/events/site=a/date=2026-12-02/two.parquet", 4),
    ]
    assert store.list("nothing-here") == []
    store.delete("blobs/ab/abc")
    store.delete("blobs/ab/abc")  # already gone: no error
    assert store.size("blobs/ab/abc") is None
    with pytest.raises(FileNotFoundError):
        store.get("blobs/ab/abc")


def test_iter_range_reads_the_bytes_asked(store: ObjectStore) -> None:
    data = secrets.token_bytes(10_000)
    store.put("models/artifacts/ab/abc", data)
    assert b"".join(store.iter_range("models/artifacts/ab/abc", 0, 10_000, piece=3000)) == data
    pieces = list(store.iter_range("models/artifacts/ab/abc", 1234, 5000, piece=2048))
    assert [len(p) for p in pieces] == [2048, 2048, 904]
    assert b"".join(pieces) == data[1234:6234]
    assert b"".join(store.iter_range("models/artifacts/ab/abc", 9000, 5000)) == data[9000:]
    with pytest.raises(FileNotFoundError):
        list(store.iter_range("models/artifacts/ab/none", 0, 10))


def test_put_replaces_whole(store: ObjectStore) -> None:
    store.put("a/b", b"x" * 1000)
    store.put("a/b", b"short")
    assert store.get("a/b") == b"short"


@pytest.mark.parametrize("one_put_up_to", [16 << 20, 4], ids=["one-put", "staged-copy"])
def test_concat_streams_parts_into_one_object(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch, one_put_up_to: int
) -> None:
    monkeypatch.setattr(object_store_s3, "SINGLE_PUT_BYTES", one_put_up_to)
    parts = [f"uploads/u1/{i:020d}" for i in (0, 3, 9)]
    for key, data in zip(parts, [b"abc", b"defghi", b"j" * (3 << 20)], strict=True):
        store.put(key, data)
    assert store.concat("blobs/zz/whole", parts) == 9 + (3 << 20)
    assert store.get("blobs/zz/whole") == b"abcdefghi" + b"j" * (3 << 20)
    assert b"".join(store.iter_bytes("blobs/zz/whole", piece=1000)) == store.get("blobs/zz/whole")
    assert [o.key for o in store.list("blobs")] == ["blobs/zz/whole"]  # no staging left in view


@pytest.mark.parametrize("one_put_up_to", [16 << 20, 4], ids=["one-put", "staged-copy"])
def test_concat_with_a_missing_part_or_a_wrong_sha256_leaves_no_object(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch, one_put_up_to: int
) -> None:
    monkeypatch.setattr(object_store_s3, "SINGLE_PUT_BYTES", one_put_up_to)
    store.put("uploads/u2/0", b"abc")
    store.put("uploads/u2/3", b"defgh")
    with pytest.raises(FileNotFoundError):
        store.concat("blobs/zz/broken", ["uploads/u2/0", "uploads/u2/9"])
    wrong = hashlib.sha256(b"abcdefgX").hexdigest()
    with pytest.raises(ChecksumMismatch):
        store.concat("blobs/zz/broken", ["uploads/u2/0", "uploads/u2/3"], sha256=wrong)
    assert store.size("blobs/zz/broken") is None
    right = hashlib.sha256(b"abcdefgh").hexdigest()
    assert store.concat("blobs/zz/whole", ["uploads/u2/0", "uploads/u2/3"], sha256=right) == 8
    assert store.get("blobs/zz/whole") == b"abcdefgh"
    assert store.list(object_store_s3.STAGING) == []


@pytest.mark.parametrize("one_put_up_to", [1 << 20, 4], ids=["one-put", "staged-copy"])
def test_put_file_consumes_the_source(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_put_up_to: int
) -> None:
    monkeypatch.setattr(object_store_s3, "SINGLE_PUT_BYTES", one_put_up_to)
    source = tmp_path / "upload.bin"
    source.write_bytes(b"raw frame")
    store.put_file("blobs/12/raw", source)
    assert not source.exists()
    assert store.get("blobs/12/raw") == b"raw frame"
    assert [o.key for o in store.list("blobs")] == ["blobs/12/raw"]
    assert store.list(object_store_s3.STAGING) == []  # no staging object left


def test_move(store: ObjectStore) -> None:
    store.put("compaction/job/0.pending", b"rows")
    store.move("compaction/job/0.pending", "lake/events/site=a/date=2026-12-01/c.parquet")
    assert store.size("compaction/job/0.pending") is None
    assert store.get("lake/events/site=a/date=2026-12-01/c.parquet") == b"rows"


def test_arrow_location_reads_what_was_put(store: ObjectStore) -> None:
    store.put("lake/x/one", b"123")
    fs, base = store.arrow_location("lake/x")
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    assert [(Path(i.path).name, i.size) for i in infos if i.type == pafs.FileType.File] == [
        ("one", 3)
    ]


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "a/./b", "a/b c", "a\\b", ".."])
def test_bad_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError, match="not an object key"):
        store.put(key, b"x")
    with pytest.raises(ValueError, match="not an object key"):
        check_key(key)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://bucket", "expected s3://"),
        ("s3://", "expected s3://"),
        ("s3://b?endpoint=ftp://x", "must be http"),
        ("s3://b?colour=blue", "unknown option"),
        ("s3://b/a/../c", "not a usable key prefix"),
    ],
)
def test_bad_store_urls_are_one_clear_error(url: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_s3_url(url)


def test_store_url_parts() -> None:
    location = parse_s3_url("s3://lake-bucket/fleet/eu?endpoint=http://127.0.0.1:9000&region=eu")
    assert (location.bucket, location.prefix, location.endpoint, location.region) == (
        "lake-bucket",
        "fleet/eu",
        "http://127.0.0.1:9000",
        "eu",
    )
    assert location.url == "s3://lake-bucket/fleet/eu?endpoint=http://127.0.0.1:9000"


def test_an_unreachable_store_is_a_retryable_503() -> None:
    store = S3ObjectStore(
        parse_s3_url(f"s3://b?endpoint=http://127.0.0.1:{_closed_port()}"),
        access_key="k",
        secret_key="s",
        timeout_s=2.0,
    )
    with pytest.raises(ObjectStoreUnavailable) as caught:
        store.put("a/b", b"x")
    assert caught.value.retryable
    assert caught.value.status == 503


def test_wrong_credentials_are_refused(seaweed: SeaweedS3) -> None:
    seaweed.store("cred-tests")  # the bucket exists
    store = S3ObjectStore(
        parse_s3_url(seaweed.store_url("cred-tests")), access_key="nobody", secret_key="wrong"
    )
    with pytest.raises(ObjectStoreUnavailable, match="writing a/b"):
        store.put("a/b", b"x")


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
