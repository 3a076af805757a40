"""What a crash may leave of a checksummed chunk, for both chunk guards, and the
running sha256 that spares completion a re-read."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_ingest import blobs
from cloud_ingest.tus import UploadStore
from cloud_ingest.tus.chunk_guard import MarkerGuard, XattrGuard
from cloud_ingest.tus.digests import RunningDigests
from cloud_ingest.tus.pending import CLEARED, PendingChunk, cut_back_to, decode_record
from tests.cloud_ingest.tus_fixtures import (
    OCTET,
    FakeClock,
    auth,
    checksum_header,
    create,
    metadata_header,
    start_tus,
)

GUARDS = ["xattr", "marker"]


# ---------------------------------------------------------------- pending records
@given(
    start=st.integers(0, 1 << 40),
    length=st.none() | st.integers(0, 1 << 30),
    algorithm=st.sampled_from(["sha1", "sha256"]),
    digest=st.binary(min_size=20, max_size=32),
)
def test_pending_record_round_trips(
    start: int, length: int | None, algorithm: str, digest: bytes
) -> None:
    chunk = PendingChunk(start, length, algorithm, digest)
    assert decode_record(chunk.encode()) == chunk


@given(st.binary(max_size=300))
def test_any_bytes_decode_to_a_record_or_none(raw: bytes) -> None:
    decoded = decode_record(raw)
    assert decoded is None or isinstance(decoded, PendingChunk)


def test_cleared_torn_and_legacy_records() -> None:
    old = PendingChunk(100, 50, "sha256", bytes(32)).encode()
    new = PendingChunk(150, 50, "sha256", b"\xff" * 32).encode()
    assert decode_record(CLEARED) is None
    assert decode_record(b"") is None
    for cut in range(1, len(new)):  # a write torn between two records is one of them or none
        assert decode_record(new[:cut] + old[cut:]) in (
            decode_record(old),
            decode_record(new),
            None,
        )
    assert decode_record(new[:40] + old[40:]) is None
    assert decode_record(b"70000") == PendingChunk(70_000, None)  # written by older versions


def test_cut_back_to() -> None:
    data = b"a" * 100 + b"chunk" + b"tail"
    good = PendingChunk(100, 5, "sha256", hashlib.sha256(b"chunk").digest())

    def digest(start: int, length: int, algorithm: str) -> bytes:
        return hashlib.new(algorithm, data[start : start + length]).digest()

    assert cut_back_to(None, len(data), digest) is None
    assert cut_back_to(good, len(data), digest) is None  # checked and whole: keep
    assert cut_back_to(good, 100, digest) is None  # nothing past the start
    assert cut_back_to(good, 103, digest) == 100  # not whole
    wrong = PendingChunk(100, 5, "sha256", hashlib.sha256(b"other").digest())
    assert cut_back_to(wrong, len(data), digest) == 100
    assert cut_back_to(PendingChunk(100, None, "sha256", good.digest), 105, digest) == 100
    assert cut_back_to(PendingChunk(100, None), 105, digest) == 100


# ---------------------------------------------------------------- running digests
def test_running_digests() -> None:
    digests = RunningDigests(limit=2)
    state = digests.at("a", 0)
    assert state is not None
    state.update(b"hello")
    digests.advance("a", 5, state)
    copy = digests.at("a", 5)
    assert copy is not None
    copy.update(b"refused chunk")  # not handed back: the entry is unchanged
    assert digests.hexdigest("a", 5) == hashlib.sha256(b"hello").hexdigest()
    assert digests.at("a", 4) is None  # another offset: unknown
    assert digests.at("b", 3) is None
    digests.advance("b", 0, hashlib.sha256())
    digests.advance("c", 0, hashlib.sha256())
    assert len(digests) == 2
    assert digests.at("a", 5) is None  # the least recently used went first
    digests.forget("b")
    assert len(digests) == 1


# ---------------------------------------------------------------- over HTTP, both guards
@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _patch(
    session: aiohttp.ClientSession, url: str, offset: int, body: bytes, **headers: str
) -> int:
    hdrs = auth(**{"Upload-Offset": str(offset), "Content-Type": OCTET, **headers})
    async with session.patch(url, data=io.BytesIO(body), headers=hdrs) as r:
        await r.read()
        return r.status


async def _offset_after_restart(
    session: aiohttp.ClientSession, root: Path, clock: FakeClock, guard: str, upload_id: str
) -> int:
    async for tus in start_tus(root, clock, guard=guard):
        url = tus.url(f"/v1/uploads/{upload_id}")
        async with session.head(url, headers=auth()) as r:
            offset = int(r.headers["Upload-Offset"])
        assert offset == tus.store.data_path(upload_id).stat().st_size
        return offset
    raise AssertionError("no server")


@pytest.mark.parametrize("guard", GUARDS)
async def test_crash_inside_a_checksummed_chunk_cuts_it_back(
    tmp_path: Path, session: aiohttp.ClientSession, guard: str
) -> None:
    clock = FakeClock()
    data = os.urandom(3000)
    async for tus in start_tus(tmp_path, clock, guard=guard):
        url = await create(session, tus, len(data))
        upload_id = url.rsplit("/", 1)[1]
        part = data[:1000]
        checksum = checksum_header(part)
        assert await _patch(session, url, 0, part, **{"Upload-Checksum": checksum}) == 204
        # as if the process died while writing the next checksummed chunk
        chunk = PendingChunk(1000, 1000, "sha256", hashlib.sha256(data[1000:2000]).digest())
        with tus.store.data_path(upload_id).open("r+b") as f:
            tus.store.guard.arm(upload_id, f, chunk)
            f.seek(1000)
            f.write(data[1000:1600])
    assert await _offset_after_restart(session, tmp_path, clock, guard, upload_id) == 1000


@pytest.mark.parametrize("guard", GUARDS)
async def test_a_crash_after_checked_chunks_keeps_them(
    tmp_path: Path, session: aiohttp.ClientSession, guard: str
) -> None:
    clock = FakeClock()
    data = os.urandom(3000)
    async for tus in start_tus(tmp_path, clock, guard=guard):
        url = await create(session, tus, len(data))
        upload_id = url.rsplit("/", 1)[1]
        for start in (0, 1000):
            part = data[start : start + 1000]
            checksum = checksum_header(part)
            assert await _patch(session, url, start, part, **{"Upload-Checksum": checksum}) == 204
    assert await _offset_after_restart(session, tmp_path, clock, guard, upload_id) == 2000


@pytest.mark.parametrize("guard", GUARDS)
async def test_bytes_written_over_a_refused_chunk_survive_a_crash(
    tmp_path: Path, session: aiohttp.ClientSession, guard: str
) -> None:
    """A refused chunk's leftovers must not cut back bytes acknowledged after it."""
    clock = FakeClock()
    data = os.urandom(3000)
    async for tus in start_tus(tmp_path, clock, guard=guard):
        url = await create(session, tus, len(data))
        upload_id = url.rsplit("/", 1)[1]
        part = data[:1000]
        checksum = checksum_header(part)
        assert await _patch(session, url, 0, part, **{"Upload-Checksum": checksum}) == 204
        wrong = checksum_header(b"not these bytes")
        assert (
            await _patch(session, url, 1000, data[1000:2000], **{"Upload-Checksum": wrong}) == 460
        )
        assert await _patch(session, url, 1000, data[1000:2500]) == 204  # no checksum
    assert await _offset_after_restart(session, tmp_path, clock, guard, upload_id) == 2500


@pytest.mark.parametrize("guard", GUARDS)
async def test_upload_without_checksums_keeps_every_byte_on_disk(
    tmp_path: Path, session: aiohttp.ClientSession, guard: str
) -> None:
    clock = FakeClock()
    async for tus in start_tus(tmp_path, clock, guard=guard):
        url = await create(session, tus, 3000)
        upload_id = url.rsplit("/", 1)[1]
        assert await _patch(session, url, 0, b"x" * 1000) == 204
        with tus.store.data_path(upload_id).open("ab") as f:  # reached the disk, never answered
            f.write(b"y" * 500)
    assert await _offset_after_restart(session, tmp_path, clock, guard, upload_id) == 1500


@pytest.mark.parametrize("guard", GUARDS)
async def test_completion_uses_the_running_sha256_not_a_re_read(
    tmp_path: Path,
    session: aiohttp.ClientSession,
    guard: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    meta = {"Upload-Metadata": metadata_header({"sha256": digest})}
    reads: list[Path] = []
    real_file_sha256 = blobs.file_sha256

    def counting_file_sha256(path: Path) -> str:
        reads.append(path)
        return real_file_sha256(path)

    monkeypatch.setattr(blobs, "file_sha256", counting_file_sha256)
    async for tus in start_tus(tmp_path, clock, guard=guard):
        url = await create(session, tus, len(data), **meta)
        for start in range(0, len(data), 100_000):
            part = data[start : start + 100_000]
            checksum = checksum_header(part)
            assert await _patch(session, url, start, part, **{"Upload-Checksum": checksum}) == 204
        assert tus.blobs.path_for(digest).read_bytes() == data
        assert reads == []
        # after a restart the running sha256 is gone: completion hashes the file
        url = await create(session, tus, len(data), **meta)
        upload_id = url.rsplit("/", 1)[1]
        assert await _patch(session, url, 0, data[:100_000]) == 204
    async for tus in start_tus(tmp_path, clock, guard=guard):
        url = tus.url(f"/v1/uploads/{upload_id}")
        assert await _patch(session, url, 100_000, data[100_000:]) == 204
        assert len(reads) == 1
        assert [c.sha256 for c in tus.completed] == [digest]


async def test_running_sha256_mismatch_is_refused_like_a_re_read(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """Both ways of hashing a finished upload answer a mismatch alike: 410, upload deleted."""
    clock = FakeClock()
    wrong = hashlib.sha256(b"other").hexdigest()
    meta = {"Upload-Metadata": metadata_header({"sha256": wrong})}
    async for tus in start_tus(tmp_path, clock):
        url = await create(session, tus, 4, **meta)
        assert await _patch(session, url, 0, b"ab") == 204
        assert await _patch(session, url, 2, b"cd") == 410  # the running sha256
        assert not tus.blobs.has(wrong)
        assert tus.completed == []
        assert list(tus.store.root.iterdir()) == []
        url = await create(session, tus, 4, **meta)
        upload_id = url.rsplit("/", 1)[1]
        assert await _patch(session, url, 0, b"ab") == 204
    async for tus in start_tus(tmp_path, clock):  # a restart: the file is hashed again
        url = tus.url(f"/v1/uploads/{upload_id}")
        assert await _patch(session, url, 2, b"cd") == 410
        assert not tus.blobs.has(wrong)
        assert tus.completed == []
        assert list(tus.store.root.iterdir()) == []


def test_store_picks_the_xattr_guard_where_xattrs_work(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.test", b"1")
    except OSError:
        expected: type[MarkerGuard] | type[XattrGuard] = MarkerGuard
    else:
        expected = XattrGuard
    assert type(UploadStore(tmp_path / "uploads").guard) is expected
