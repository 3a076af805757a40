"""The tus 1.0.0 server over real loopback sockets: core, extensions, ownership."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from tests.cloud_ingest.tus_fixtures import (
    OCTET,
    FakeClock,
    TusServer,
    auth,
    checksum_header,
    create,
    metadata_header,
    start_tus,
)


@pytest.fixture
async def tus(tmp_path: Path) -> AsyncIterator[TusServer]:
    async for server in start_tus(tmp_path, FakeClock(), max_size=1 << 24):
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def patch(
    session: aiohttp.ClientSession, url: str, offset: int, body: bytes, **headers: str
) -> aiohttp.ClientResponse:
    hdrs = auth(**{"Upload-Offset": str(offset), "Content-Type": OCTET, **headers})
    async with session.patch(url, data=io.BytesIO(body), headers=hdrs) as r:
        await r.read()
        return r


async def head(
    session: aiohttp.ClientSession, url: str, token: str = "tok-a"
) -> aiohttp.ClientResponse:
    async with session.head(url, headers=auth(token)) as r:
        return r


async def test_options_announces_version_extensions_and_limits(
    tus: TusServer, session: aiohttp.ClientSession
) -> None:
    async with session.options(tus.url()) as r:
        assert r.status == 204
        assert r.headers["Tus-Version"] == "1.0.0"
        assert r.headers["Tus-Resumable"] == "1.0.0"
        assert r.headers["Tus-Max-Size"] == str(1 << 24)
        assert set(r.headers["Tus-Checksum-Algorithm"].split(",")) == {"sha1", "sha256"}
        for ext in (
            "creation",
            "creation-with-upload",
            "creation-defer-length",
            "checksum",
            "termination",
            "expiration",
        ):
            assert ext in r.headers["Tus-Extension"].split(",")


async def test_unsupported_version_is_412_with_tus_version(
    tus: TusServer, session: aiohttp.ClientSession
) -> None:
    hdrs = {**auth(), "Tus-Resumable": "0.2.2", "Upload-Length": "5"}
    async with session.post(tus.url(), headers=hdrs) as r:
        assert r.status == 412
        assert r.headers["Tus-Version"] == "1.0.0"
        assert r.headers["Tus-Resumable"] == "1.0.0"
        assert (await r.json())["error"] == "precondition_failed"


async def test_upload_in_chunks_then_head_reports_everything(
    tus: TusServer, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(300_000)
    url = await create(
        session,
        tus,
        len(data),
        **{"Upload-Metadata": metadata_header({"filename": "a.jpg", "k": ""})},
    )
    r = await head(session, url)
    assert r.status == 200
    assert r.headers["Upload-Offset"] == "0"
    assert r.headers["Upload-Length"] == str(len(data))
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["Tus-Resumable"] == "1.0.0"
    assert "Upload-Expires" in r.headers
    assert "filename YS5qcGc=" in r.headers["Upload-Metadata"]
    r = await patch(session, url, 0, data[:100_000])
    assert r.status == 204
    assert r.headers["Upload-Offset"] == "100000"
    assert r.headers["Tus-Resumable"] == "1.0.0"
    r = await patch(session, url, 100_000, data[100_000:])
    assert r.headers["Upload-Offset"] == str(len(data))
    assert (await head(session, url)).headers["Upload-Offset"] == str(len(data))
    assert len(tus.completed) == 1
    done = tus.completed[0]
    assert (done.device_id, done.length, done.sha256, done.blob_path) == (
        "dev-a",
        len(data),
        None,
        None,
    )
    assert done.metadata == {"filename": "a.jpg", "k": ""}
    assert tus.store.data_path(done.upload_id).read_bytes() == data


async def test_creation_errors(tus: TusServer, session: aiohttp.ClientSession) -> None:
    async with session.post(tus.url(), headers=auth()) as r:
        assert r.status == 400
        assert r.headers["Tus-Resumable"] == "1.0.0"
    async with session.post(tus.url(), headers=auth(**{"Upload-Length": str((1 << 24) + 1)})) as r:
        assert r.status == 413
    async with session.post(tus.url(), headers=auth(**{"Upload-Length": "-3"})) as r:
        assert r.status == 400
    async with session.post(
        tus.url(), headers=auth(**{"Upload-Length": "3", "Upload-Metadata": "k !!!"})
    ) as r:
        assert r.status == 400
    async with session.post(tus.url(), headers=auth("tok-op", **{"Upload-Length": "3"})) as r:
        assert r.status == 403
    async with session.post(
        tus.url(), headers={**auth(**{"Upload-Length": "3"}), "Authorization": ""}
    ) as r:
        assert r.status == 401


async def test_patch_errors(tus: TusServer, session: aiohttp.ClientSession) -> None:
    url = await create(session, tus, 10)
    assert (await patch(session, url, 0, b"abc", **{"Content-Type": "text/plain"})).status == 415
    assert (await patch(session, url, 5, b"abc")).status == 409
    assert (await patch(session, url, 0, b"abc", **{"Upload-Offset": "x"})).status == 400
    assert (await patch(session, url, 0, b"0123456789AB")).status == 413
    assert (await patch(session, tus.url("/v1/uploads/" + "0" * 32), 0, b"abc")).status == 404
    assert (await patch(session, tus.url("/v1/uploads/nonsense"), 0, b"abc")).status == 404
    assert (await head(session, url)).headers["Upload-Offset"] == "0"
    assert (await patch(session, url, 0, b"0123456789")).status == 204
    assert (await patch(session, url, 10, b"x")).status in (409, 413)


async def test_body_past_length_without_content_length_is_discarded(
    tus: TusServer, session: aiohttp.ClientSession
) -> None:
    url = await create(session, tus, 10)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"01234"
        yield b"56789ABC"

    hdrs = auth(**{"Upload-Offset": "0", "Content-Type": OCTET})
    async with session.patch(url, data=chunks(), headers=hdrs) as r:
        assert r.status == 413
    assert (await head(session, url)).headers["Upload-Offset"] == "0"


async def test_checksums(tus: TusServer, session: aiohttp.ClientSession) -> None:
    url = await create(session, tus, 8)
    r = await patch(
        session, url, 0, b"abcd", **{"Upload-Checksum": checksum_header(b"abcd", "sha1")}
    )
    assert r.status == 204
    r = await patch(session, url, 4, b"efgh", **{"Upload-Checksum": checksum_header(b"xxxx")})
    assert r.status == 460
    assert (await head(session, url)).headers["Upload-Offset"] == "4"
    r = await patch(session, url, 4, b"efgh", **{"Upload-Checksum": "md5 AAAA"})
    assert r.status == 400
    r = await patch(session, url, 4, b"efgh", **{"Upload-Checksum": checksum_header(b"efgh")})
    assert r.status == 204
    assert tus.store.data_path(tus.completed[0].upload_id).read_bytes() == b"abcdefgh"
    assert not list(tus.store.root.glob("*.pending"))


async def test_creation_with_upload_and_defer_length(
    tus: TusServer, session: aiohttp.ClientSession
) -> None:
    hdrs = auth(**{"Upload-Defer-Length": "1", "Content-Type": OCTET})
    async with session.post(tus.url(), data=b"hello ", headers=hdrs) as r:
        assert r.status == 201
        assert r.headers["Upload-Offset"] == "6"
        url = str(tus.server.make_url(r.headers["Location"]))
    r = await head(session, url)
    assert r.headers["Upload-Defer-Length"] == "1"
    assert "Upload-Length" not in r.headers
    r = await patch(session, url, 6, b"world", **{"Upload-Length": "11"})
    assert r.status == 204
    assert (await head(session, url)).headers["Upload-Length"] == "11"
    assert tus.completed[0].length == 11


async def test_ownership_and_termination(tus: TusServer, session: aiohttp.ClientSession) -> None:
    url = await create(session, tus, 4)
    assert (await head(session, url, "tok-b")).status == 403
    assert (await patch(session, url, 0, b"ab", Authorization="Bearer tok-b")).status == 403
    assert (await patch(session, url, 0, b"ab", Authorization="Bearer tok-op")).status == 403
    assert (await head(session, url, "tok-op")).status == 200
    async with session.delete(url, headers=auth("tok-b")) as r:
        assert r.status == 403
    async with session.delete(url, headers=auth("tok-op")) as r:
        assert r.status == 204
        assert r.headers["Tus-Resumable"] == "1.0.0"
    assert (await head(session, url)).status == 404
    assert not list(tus.store.root.iterdir())


async def test_sha256_metadata_moves_verified_upload_into_blob_store(
    tus: TusServer, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(50_000)
    digest = hashlib.sha256(data).hexdigest()
    meta = metadata_header({"sha256": digest, "stream": "raw_frames"})
    url = await create(session, tus, len(data), **{"Upload-Metadata": meta})
    async with session.head(tus.url(f"/v1/blobs/{digest}"), headers=auth()) as r:
        assert r.status == 404
    await patch(session, url, 0, data[:20_000])
    r = await patch(session, url, 20_000, data[20_000:])
    assert r.status == 204
    assert tus.blobs.path_for(digest).read_bytes() == data
    assert tus.completed[0].blob_path == tus.blobs.path_for(digest)
    assert tus.completed[0].sha256 == digest
    async with session.head(tus.url(f"/v1/blobs/{digest}"), headers=auth()) as r:
        assert r.status == 200
    async with session.head(tus.url("/v1/blobs/xyz"), headers=auth()) as r:
        assert r.status == 400
    head_after = await head(session, url)
    assert head_after.headers["Upload-Offset"] == str(len(data))


async def test_whole_upload_sha256_mismatch_is_410_upload_gone_not_460(
    tus: TusServer, session: aiohttp.ClientSession
) -> None:
    """The last chunk passes its own checksum but the whole does not hash to the metadata's
    sha256: the upload is deleted, so the answer must say "start a new upload" (410), not
    "resend this chunk" (460, after which the device's resend met a 404)."""
    wrong = hashlib.sha256(b"something else").hexdigest()
    url = await create(session, tus, 6, **{"Upload-Metadata": metadata_header({"sha256": wrong})})
    first = await patch(session, url, 0, b"abc", **{"Upload-Checksum": checksum_header(b"abc")})
    assert first.status == 204
    hdrs = auth(**{"Upload-Offset": "3", "Content-Type": OCTET})
    hdrs["Upload-Checksum"] = checksum_header(b"def")
    async with session.patch(url, data=b"def", headers=hdrs) as r:
        assert r.status == 410
        assert r.headers["Tus-Resumable"] == "1.0.0"
        assert "Upload-Offset" not in r.headers
        body = await r.json()
    assert body["error"] == "upload_sha256_mismatch"
    assert wrong in body["detail"] and hashlib.sha256(b"abcdef").hexdigest() in body["detail"]
    assert "deleted" in body["detail"] and "start a new upload" in body["detail"]
    assert not tus.blobs.has(wrong)
    assert tus.completed == []
    assert (await head(session, url)).status == 404
    assert not list(tus.store.root.iterdir())


async def test_creation_with_upload_whose_sha256_mismatches_is_410_without_location(
    tus: TusServer, session: aiohttp.ClientSession
) -> None:
    wrong = hashlib.sha256(b"something else").hexdigest()
    hdrs = auth(
        **{
            "Upload-Length": "6",
            "Upload-Metadata": metadata_header({"sha256": wrong}),
            "Upload-Checksum": checksum_header(b"abcdef"),
            "Content-Type": OCTET,
        }
    )
    async with session.post(tus.url(), data=b"abcdef", headers=hdrs) as r:
        assert r.status == 410
        assert "Location" not in r.headers
        assert (await r.json())["error"] == "upload_sha256_mismatch"
    assert not list(tus.store.root.iterdir())
    assert not tus.blobs.has(wrong)


async def test_concurrent_patches_never_corrupt(
    tus: TusServer, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(4 << 20)
    url = await create(session, tus, len(data))
    results = await asyncio.gather(
        *(patch(session, url, 0, data[: 2 << 20]) for _ in range(4)), return_exceptions=False
    )
    statuses = sorted(r.status for r in results)
    assert statuses.count(204) == 1
    assert set(statuses) <= {204, 409, 423}
    assert (await head(session, url)).headers["Upload-Offset"] == str(2 << 20)
    await patch(session, url, 2 << 20, data[2 << 20 :])
    assert tus.store.data_path(tus.completed[0].upload_id).read_bytes() == data


async def test_interrupted_patch_without_checksum_keeps_the_bytes(
    tus: TusServer, session: aiohttp.ClientSession
) -> None:
    url = await create(session, tus, 1000)
    path = "/v1/uploads/" + url.rsplit("/", 1)[1]
    reader, writer = await asyncio.open_connection(tus.server.host, tus.server.port)
    request = (
        f"PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-a\r\n"
        f"Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: {OCTET}\r\n"
        "Content-Length: 1000\r\n\r\n"
    ).encode() + b"z" * 400
    writer.write(request)
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()
    for _ in range(50):
        offset = (await head(session, url)).headers["Upload-Offset"]
        if offset == "400":
            break
        await asyncio.sleep(0.05)
    assert offset == "400"
    assert (await patch(session, url, 400, b"y" * 600)).status == 204
    assert tus.store.data_path(tus.completed[0].upload_id).read_bytes() == b"z" * 400 + b"y" * 600


async def test_expiry_header_and_sweep(tus: TusServer, session: aiohttp.ClientSession) -> None:
    from cloud_ingest.tus import sweep_expired

    url = await create(session, tus, 10)
    done = await create(session, tus, 2)
    await patch(session, done, 0, b"ok")
    assert (await head(session, url)).headers["Upload-Expires"].endswith("GMT")
    assert sweep_expired(tus.store, tus.clock.now + 10) == 0
    tus.clock.now += 3601
    assert (await head(session, url)).status == 404
    assert sweep_expired(tus.store, tus.clock.now) == 1
    assert not tus.store.data_path(url.rsplit("/", 1)[1]).exists()
    assert (await head(session, done)).headers["Upload-Offset"] == "2"
    assert sweep_expired(tus.store, tus.clock.now + 3600) == 1


async def test_empty_upload_completes_at_creation(
    tus: TusServer, session: aiohttp.ClientSession
) -> None:
    digest = hashlib.sha256(b"").hexdigest()
    url = await create(session, tus, 0, **{"Upload-Metadata": metadata_header({"sha256": digest})})
    assert (await head(session, url)).headers["Upload-Offset"] == "0"
    assert [c.length for c in tus.completed] == [0]
    assert tus.blobs.path_for(digest).read_bytes() == b""


async def test_second_patch_while_one_is_writing_gets_423(
    tus: TusServer, session: aiohttp.ClientSession
) -> None:
    url = await create(session, tus, 10)
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"01234"
        await release.wait()
        yield b"56789"

    hdrs = auth(**{"Upload-Offset": "0", "Content-Type": OCTET})

    async def first() -> int:
        async with session.patch(url, data=slow_body(), headers=hdrs) as r:
            return r.status

    writing = asyncio.create_task(first())
    for _ in range(100):
        if tus.store.is_busy(url.rsplit("/", 1)[1]):
            break
        await asyncio.sleep(0.01)
    second = await patch(session, url, 0, b"xxxxx")
    assert second.status == 423
    async with session.delete(url, headers=auth()) as r:
        assert r.status == 423
    release.set()
    assert await writing == 204
    assert tus.store.data_path(tus.completed[0].upload_id).read_bytes() == b"0123456789"


async def test_a_tus_header_sent_twice_is_400_and_changes_nothing(
    tus: TusServer, session: aiohttp.ClientSession
) -> None:
    """Two values of one header (a buggy client or proxy) are ambiguous: refused, not guessed."""

    def twice(name: str, first: str, second: str, **extra: str) -> CIMultiDict[str]:
        headers = CIMultiDict(auth(**extra))
        headers.add(name, first)
        headers.add(name, second)
        return headers

    async with session.post(tus.url(), headers=twice("Upload-Length", "10", "20")) as r:
        assert r.status == 400
        assert "Upload-Length" in (await r.json())["detail"]
    assert tus.store.all_ids() == []  # no upload was created

    url = await create(session, tus, 10)
    for name, first, second in [
        ("Upload-Offset", "0", "5"),
        ("Upload-Checksum", checksum_header(b"abc"), checksum_header(b"xyz")),
        ("Upload-Length", "10", "10"),
    ]:
        headers = twice(name, first, second, **{"Content-Type": OCTET})
        if name != "Upload-Offset":
            headers["Upload-Offset"] = "0"
        async with session.patch(url, data=b"abc", headers=headers) as r:
            assert r.status == 400, name
            assert name in (await r.json())["detail"]
        assert (await head(session, url)).headers["Upload-Offset"] == "0", name


async def test_upload_expires_told_to_the_client_survives_a_restart(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """A PATCH moves Upload-Expires on; after a restart the upload lives until then."""
    from email.utils import parsedate_to_datetime

    clock = FakeClock()
    async for tus in start_tus(tmp_path, clock):
        url = await create(session, tus, 10)
        clock.now += 3000  # late in the 3600 s window, the link comes back
        r = await patch(session, url, 0, b"01234")
        assert r.status == 204
        promised = parsedate_to_datetime(r.headers["Upload-Expires"]).timestamp()
        assert promised > clock.now + 3000
    clock.now += 1000  # restarted (fresh store, same directory) before the promise is due
    assert clock.now < promised
    async for tus in start_tus(tmp_path, clock):
        r = await head(session, tus.url(f"/v1/uploads/{url.rsplit('/', 1)[1]}"))
        assert r.status == 200
        assert r.headers["Upload-Offset"] == "5"
        assert parsedate_to_datetime(r.headers["Upload-Expires"]).timestamp() == promised


async def test_failed_creation_with_upload_leaves_no_orphan_upload(
    tus: TusServer, session: aiohttp.ClientSession
) -> None:
    """An error answer carries no Location, so nobody could resume that upload: none is kept."""
    for length, body, extra, status in [
        (5, b"hello", {"Upload-Checksum": checksum_header(b"other")}, 460),
        (3, b"0123456789", {}, 413),
    ]:
        headers = auth(**{"Upload-Length": str(length), "Content-Type": OCTET, **extra})
        async with session.post(tus.url(), data=body, headers=headers) as r:
            assert r.status == status
            assert "Location" not in r.headers
        assert tus.store.all_ids() == [], status
        assert list(tus.store.root.glob("*.bin")) == [], status
    headers = auth(**{"Upload-Length": "5", "Content-Type": OCTET})
    async with session.post(tus.url(), data=b"hello", headers=headers) as r:
        assert r.status == 201  # the retry that works is the one upload held
    assert len(tus.store.all_ids()) == 1
    assert tus.completed[0].length == 5
