"""Resumable download of a release: the manifest, then the artifact with HTTP Range.

The artifact goes to ``<name>.part`` beside its final name; after a cut, the
bytes already on disk are hashed again and the download resumes at their end
(``Range: bytes=N-``).  Every byte passes ``ArtifactDigest`` as it arrives, so a
server sending more than the manifest declares is cut off at the declared size
(endless-data attack); a wrong sha256 deletes the part.  Nothing downloaded is
trusted until ``UpdateAgent.install`` verified it.

``Fetcher`` is the one I/O seam (like python-tuf's ``FetcherInterface``):
``HttpFetcher`` talks to the ingest service with the device token, paced by a
``TokenBucket`` (share the sync engine's to stay under the global cap), and may
wait on a gate before each piece (metadata first).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO, Protocol

import aiohttp

from appliance.updates.errors import ReleaseError
from sync.scheduler import TokenBucket
from sync.shared.durable_file import fsync_directory
from sync.shared.signing import (
    MAX_ENVELOPE_BYTES,
    ArtifactDigest,
    ArtifactTooLong,
    FileDigest,
    HashMismatch,
)

__all__ = ["DownloadError", "Fetcher", "HttpFetcher", "download_artifact", "fetch_manifest"]

_PIECE = 64 * 1024


class DownloadError(ReleaseError):
    """The cloud could not be reached or answered wrongly; retry later (resumes)."""

    retryable = True


class Fetcher(Protocol):
    def stream(self, url: str, offset: int) -> AsyncGenerator[tuple[int, bytes], None]:
        """Pieces of ``url`` from ``offset`` on, each with its position: a server that
        ignores the range starts again at 0 (the caller starts over)."""
        ...


class HttpFetcher:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        bucket: TokenBucket | None = None,
        gate: Callable[[], Awaitable[None]] | None = None,
        read_timeout_s: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._bucket = bucket or TokenBucket(None)
        self._gate = gate
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout_s)

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    async def stream(self, url: str, offset: int) -> AsyncGenerator[tuple[int, bytes], None]:
        headers = dict(self._headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.get(self.url(url), headers=headers) as response,
            ):
                position = _start_of(response, offset)
                async for piece in response.content.iter_chunked(_PIECE):
                    if self._gate is not None:
                        await self._gate()
                    delay = self._bucket.reserve(len(piece), time.monotonic())
                    if delay > 0:
                        await asyncio.sleep(delay)
                    yield position, piece
                    position += len(piece)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DownloadError(f"download of {url} interrupted: {exc!r}") from exc


def _start_of(response: aiohttp.ClientResponse, offset: int) -> int:
    if response.status == 200:
        return 0
    if response.status == 206:
        content_range = response.headers.get("Content-Range", "")
        expected = f"bytes {offset}-"
        if not content_range.startswith(expected):
            raise DownloadError(f"asked from byte {offset}, got Content-Range {content_range!r}")
        return offset
    if response.status == 416:
        raise DownloadError(f"range from byte {offset} not satisfiable: {response.reason}")
    raise DownloadError(f"GET {response.url} answered {response.status} {response.reason}")


async def fetch_manifest(fetcher: Fetcher, url: str) -> bytes:
    """The manifest's bytes, refusing (unread) anything past ``MAX_ENVELOPE_BYTES``."""
    data = bytearray()
    async with contextlib.aclosing(fetcher.stream(url, 0)) as pieces:
        async for _, piece in pieces:
            data += piece
            if len(data) > MAX_ENVELOPE_BYTES:
                raise ArtifactTooLong(f"manifest at {url} exceeds {MAX_ENVELOPE_BYTES} bytes")
    return bytes(data)


async def download_artifact(
    fetcher: Fetcher,
    url: str,
    destination: Path,
    declared: FileDigest,
    *,
    on_progress: Callable[[int], None] = lambda received: None,
) -> Path:
    """Download (or resume) ``url`` into ``destination``, checked against ``declared``.

    ``SizeMismatch(retryable)`` when the server stopped short (the part stays: the next
    call resumes); ``ArtifactTooLong``/``HashMismatch`` delete the part."""
    part = destination.with_name(destination.name + ".part")
    await asyncio.to_thread(part.parent.mkdir, parents=True, exist_ok=True)
    digest = await asyncio.to_thread(_resume, part, declared)
    try:
        if digest.received < declared.size:
            digest = await _receive(fetcher, url, part, digest, declared, on_progress)
        digest.finish()
    except (ArtifactTooLong, HashMismatch):
        await asyncio.to_thread(part.unlink, missing_ok=True)
        raise
    await asyncio.to_thread(_publish, part, destination)
    return destination


def _resume(part: Path, declared: FileDigest) -> ArtifactDigest:
    digest = ArtifactDigest(declared, what=part.name)
    if not part.exists():
        return digest
    try:
        with part.open("rb") as handle:
            digest.resume(handle)
    except ArtifactTooLong:  # a part longer than declared is not ours to keep
        part.unlink()
        return ArtifactDigest(declared, what=part.name)
    return digest


async def _receive(
    fetcher: Fetcher,
    url: str,
    part: Path,
    digest: ArtifactDigest,
    declared: FileDigest,
    on_progress: Callable[[int], None],
) -> ArtifactDigest:
    """Append what the server sends to ``part``; returns the digest of the whole part."""
    handle = await asyncio.to_thread(part.open, "ab")
    pieces = fetcher.stream(url, digest.received)
    try:
        async for position, piece in pieces:
            if position != digest.received:  # the server ignored the range: start over
                if position != 0:
                    raise DownloadError(
                        f"{url}: got bytes from {position}, wanted {digest.received}"
                    )
                await asyncio.to_thread(handle.truncate, 0)
                digest = ArtifactDigest(declared, what=part.name)
            digest.feed(piece)  # past the declared size: raises, the stream is dropped
            await asyncio.to_thread(handle.write, piece)
            on_progress(digest.received)
    finally:
        await pieces.aclose()  # an endless or refused stream: drop the connection now
        await asyncio.to_thread(_close_synced, handle)
    return digest


def _close_synced(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


def _publish(part: Path, destination: Path) -> None:
    os.replace(part, destination)
    fsync_directory(destination.parent)
