"""The blob store keeps ciphertext on disk and a deleted day key shreds that day."""

from __future__ import annotations

import hashlib
import resource
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from appliance.privacy.blobstore import (
    BlobCorrupt,
    BlobKeyDamaged,
    BlobMissing,
    BlobShredded,
    BlobStore,
    BlobWriteFailed,
    utc_day,
)

DAY = 86400.0


def _store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", tmp_path / "keys")


def test_round_trip_and_ciphertext_on_disk(tmp_path: Path) -> None:
    store = _store(tmp_path)
    data = b"JPEG-ish plate AB12CDE " * 100
    stored = store.put(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert store.get(stored.sha256) == data
    on_disk = b"".join(p.read_bytes() for p in (tmp_path / "blobs").rglob("*.blob"))
    assert b"AB12CDE" not in on_disk
    assert len(on_disk) == len(data) + 12 + 16


def test_deleting_a_day_key_shreds_only_that_day(tmp_path: Path) -> None:
    store = _store(tmp_path)
    now = time.time()
    old = store.put(b"yesterday's frame", now - DAY)
    new = store.put(b"today's frame", now)
    (tmp_path / "keys" / f"{utc_day(now - DAY)}.key").unlink()
    reopened = _store(tmp_path)
    with pytest.raises(BlobShredded, match="shredded"):
        reopened.get(old.sha256)
    assert reopened.get(new.sha256) == b"today's frame"


def test_retention_sweep_shreds_old_days(tmp_path: Path) -> None:
    store = _store(tmp_path)
    now = time.time()
    old = store.put(b"old", now - 10 * DAY)
    kept = store.put(b"recent", now - 1 * DAY)
    assert store.sweep(retention_days=7, now=now) == [utc_day(now - 10 * DAY)]
    with pytest.raises(BlobMissing):
        store.get(old.sha256)
    assert store.get(kept.sha256) == b"recent"


def test_tampered_ciphertext_is_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    stored = store.put(b"frame bytes")
    path = next((tmp_path / "blobs").rglob("*.blob"))
    sealed = bytearray(path.read_bytes())
    sealed[-1] ^= 1
    path.write_bytes(bytes(sealed))
    with pytest.raises(BlobCorrupt):
        _store(tmp_path).get(stored.sha256)


@pytest.mark.parametrize("keep", [0, 5, 12, 27])
def test_a_truncated_blob_is_corrupt_not_a_crash(tmp_path: Path, keep: int) -> None:
    store = _store(tmp_path)
    stored = store.put(b"frame bytes")
    path = next((tmp_path / "blobs").rglob("*.blob"))
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(BlobCorrupt):
        _store(tmp_path).get(stored.sha256)


def test_concurrent_writers_share_one_day_key(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with ThreadPoolExecutor(8) as pool:
        stored = list(pool.map(lambda i: store.put(f"frame {i}".encode()), range(64)))
    reopened = _store(tmp_path)
    assert [reopened.get(s.sha256) for s in stored] == [f"frame {i}".encode() for i in range(64)]


def test_a_write_on_a_full_disk_is_a_retryable_error_and_leaves_no_partial_file(
    tmp_path: Path,
) -> None:
    """The file size cap stands in for a full disk: the write fails half way, like ENOSPC."""
    store = _store(tmp_path)
    store.put(b"today's key exists")  # only the blob write is cut short
    frame = b"\xff\xd8" + bytes(range(256)) * 8192  # 2 MiB
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        with pytest.raises(BlobWriteFailed, match="cannot store blob") as caught:
            store.put(frame)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert caught.value.retryable
    left = [p.name for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert len(left) == 1 and left[0].endswith(".blob")  # the first blob only, no .tmp
    stored = store.put(frame)  # room again: stored and readable
    assert _store(tmp_path).get(stored.sha256) == frame


@pytest.mark.parametrize("damage", [b"", b"short", b"k" * 33])
def test_a_damaged_day_key_is_a_typed_error_not_a_crash(tmp_path: Path, damage: bytes) -> None:
    store = _store(tmp_path)
    stored = store.put(b"frame bytes")
    (tmp_path / "keys" / f"{stored.day}.key").write_bytes(damage)
    reopened = _store(tmp_path)
    with pytest.raises(BlobKeyDamaged, match=f"{stored.day}.key") as caught:
        reopened.get(stored.sha256)
    assert not caught.value.retryable
    with pytest.raises(BlobKeyDamaged):
        reopened.put(b"another frame of that day")
