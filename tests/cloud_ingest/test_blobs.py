"""The content-addressed blob store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cloud_ingest.blobs import BlobStore, file_sha256
from cloud_ingest.errors import BadRequest, ChecksumMismatch


def test_adopt_verifies_then_stores_once(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    data = b"frame" * 100_000
    digest = hashlib.sha256(data).hexdigest()
    src = tmp_path / "upload.bin"
    src.write_bytes(data)
    assert not blobs.has(digest)
    assert blobs.adopt(src, digest) is True
    assert blobs.path_for(digest) == tmp_path / "blobs" / digest[:2] / digest
    assert blobs.path_for(digest).read_bytes() == data
    assert not src.exists()
    assert blobs.has(digest)
    src.write_bytes(data)
    assert blobs.adopt(src, digest) is False
    assert not src.exists()
    assert file_sha256(blobs.path_for(digest)) == digest


def test_mismatch_raises_and_stores_nothing(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    src = tmp_path / "upload.bin"
    src.write_bytes(b"abc")
    wrong = hashlib.sha256(b"abd").hexdigest()
    with pytest.raises(ChecksumMismatch) as err:
        blobs.adopt(src, wrong)
    assert err.value.status == 460
    assert src.read_bytes() == b"abc"
    assert not blobs.has(wrong)


@pytest.mark.parametrize("bad", ["", "ABC", "g" * 64, "A" * 64, "../" + "a" * 61])
def test_names_must_be_lowercase_hex_sha256(tmp_path: Path, bad: str) -> None:
    with pytest.raises(BadRequest):
        BlobStore(tmp_path).path_for(bad)
