"""Our asyncio tus 1.0.0 client for raw blobs (``/v1/uploads/``).

One call of :meth:`TusUploader.upload` moves one blob as far as the link
allows.  It is safe to call again after *any* failure, in the same process or
after a restart: the upload path is persisted (``EngineStateFile``) as soon as
the server created it, and each call first asks the server for the offset
(``HEAD``), then sends only the rest.

* A blob the cloud already holds (``HEAD /v1/blobs/{sha256}`` 200) is never sent.
* Blobs no larger than one chunk use creation-with-upload (one round trip).
* Every chunk carries ``Upload-Checksum: sha256 <base64>``; a 460 (mismatch)
  is retried a few times, then the upload is restarted.
* The chunk size follows the measured throughput (:class:`ChunkSizer`): about
  ``chunk_target_s`` seconds per chunk, within ``chunk_min/max_bytes``, so a
  cut costs at most one chunk and a fast link is not slowed by round trips.

Errors: :class:`~sync.errors.RetryableUploadError` (cut, timeout, 5xx, 423, and
the refusals a new upload fixes: 404/410 upload gone, 409 offset conflict, 460
checksum, 410 whole-upload sha256 mismatch) and
:class:`~sync.errors.PermanentUploadError` (400, 403, 413, 415: the same blob
will be refused again).

A damaged copy on the device: after a 410 whole-upload sha256 mismatch the
copy that was sent is hashed.  If it does not hash to its sha256, the error is
still retryable (the blob source may hand out a fresh, sound copy: a bad read),
but the next call hashes its copy *before* sending anything, and a copy damaged
again is :class:`BlobCopyDamaged`: there is nothing good to send, so the blob is
never uploaded again and again into the same 410.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from sync.cloud_client import CloudClient, CloudRejected, CloudUnavailable
from sync.engine_state import EngineStateFile
from sync.errors import PermanentUploadError, RetryableUploadError
from sync.link import LinkMonitor
from sync.protocol import TUS_VERSION, UploadMetadata

__all__ = [
    "BlobCopyDamaged",
    "ChunkSizer",
    "TusUploader",
    "UploadOutcome",
    "UploadProgress",
    "encode_metadata",
]

log = logging.getLogger("yardlink.sync")

UPLOADS_PATH: Final = "/v1/uploads/"
OFFSET_CONTENT_TYPE: Final = "application/offset+octet-stream"
_CHECKSUM_RETRIES: Final = 3
# Refusals that say "this upload is gone or out of step", not "this blob is unwelcome":
# 404/410 upload expired or deleted, 409 offset conflict, 460 checksum of the body.
_FIXED_BY_A_NEW_UPLOAD: Final = frozenset({404, 409, 410, 460})
WHOLE_SHA256_MISMATCH: Final = "upload_sha256_mismatch"  # 410: the whole does not hash right


class BlobCopyDamaged(PermanentUploadError):
    """The device's copy of a blob no longer hashes to the sha256 it is stored under,
    checked twice (after the cloud's 410, then again before a new upload): every
    upload of it would be refused, so do not send it again."""


def encode_metadata(meta: UploadMetadata) -> str:
    """The ``Upload-Metadata`` header: ``key base64(value)`` pairs, comma separated."""
    pairs = []
    for key, value in meta.model_dump(mode="json", exclude_none=True).items():
        encoded = base64.b64encode(str(value).encode()).decode("ascii")
        pairs.append(f"{key} {encoded}")
    return ",".join(pairs)


def checksum_header(chunk: bytes) -> str:
    return "sha256 " + base64.b64encode(hashlib.sha256(chunk).digest()).decode("ascii")


class ChunkSizer:
    """Pure: the next chunk size from the measured throughput (EWMA)."""

    def __init__(self, min_bytes: int, max_bytes: int, target_s: float) -> None:
        if not 0 < min_bytes <= max_bytes or target_s <= 0:
            raise ValueError("need 0 < min_bytes <= max_bytes and target_s > 0")
        self.min_bytes, self.max_bytes, self.target_s = min_bytes, max_bytes, target_s
        self._rate: float | None = None  # bytes per second
        self._last = min_bytes

    @property
    def rate_Bps(self) -> float | None:  # noqa: N802 - bytes (B) per second
        return self._rate

    def observe(self, nbytes: int, seconds: float) -> None:
        if nbytes <= 0 or not seconds > 0:
            return
        sample = nbytes / max(seconds, 1e-3)  # a timer tick is not an infinitely fast link
        self._rate = sample if self._rate is None else 0.5 * self._rate + 0.5 * sample

    def next_size(self) -> int:
        if self._rate is None:
            size = self.min_bytes
        else:
            size = min(int(self._rate * self.target_s), 4 * self._last)  # ramp up gently
        size = max(self.min_bytes, min(self.max_bytes, size))
        self._last = size
        return size


@dataclass(frozen=True, slots=True)
class UploadProgress:
    sha256: str
    upload_path: str | None
    offset: int
    length: int
    rate_bps: float | None
    chunk_bytes: int  # the chunk being sent: what a cut can cost at most


@dataclass(frozen=True, slots=True)
class UploadOutcome:
    sha256: str
    skipped: bool  # the cloud already held it
    bytes_sent: int  # body bytes put on the wire by this call (resends included)
    resumed_from: int  # offset this call started from


class TusUploader:
    """Uploads blobs over ``client``; remembers upload paths in ``state``."""

    def __init__(
        self,
        client: CloudClient,
        state: EngineStateFile,
        sizer: ChunkSizer,
        *,
        link: LinkMonitor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.state = state
        self.sizer = sizer
        self.link = link
        self._clock = clock
        self.current: UploadProgress | None = None
        self.chunk_in_flight = 0  # size of the chunk being (or last) sent
        self._copies_found_damaged: set[str] = set()  # sha256s: hash the next copy first

    async def upload(self, path: Path, meta: UploadMetadata) -> UploadOutcome:
        """Upload the file at ``path`` (its sha256 is ``meta.sha256``) or resume it."""
        sha = meta.sha256
        if sha in self._copies_found_damaged:
            await self._check_copy_again(path, sha)
        length = (await asyncio.to_thread(path.stat)).st_size
        sent_before = self.client.bytes_out
        try:
            upload_path = self.state.upload_path(sha)
            offset = None if upload_path is None else await self._offset(upload_path, sha, length)
            if upload_path is None or offset is None:
                if await self.client.blob_held(sha):
                    self.state.forget_upload(sha)
                    return UploadOutcome(sha, True, 0, 0)
                upload_path, offset = await self._create(path, length, meta)
            start = offset
            self._progress(sha, upload_path, offset, length)
            while offset < length:
                size = self.sizer.next_size()
                chunk = await asyncio.to_thread(_read_chunk, path, offset, size)
                if not chunk:
                    raise PermanentUploadError(f"{path} shrank below {length} bytes")
                self.chunk_in_flight = len(chunk)
                self._progress(sha, upload_path, offset, length)
                offset = await self._patch(upload_path, sha, offset, chunk, length)
                self._progress(sha, upload_path, offset, length)
        except CloudUnavailable as exc:
            raise RetryableUploadError(f"upload of {sha[:12]} interrupted: {exc}") from exc
        except CloudRejected as exc:
            raise await self._refusal(path, sha, exc) from exc
        finally:
            self.current = None
        self.state.forget_upload(sha)
        return UploadOutcome(sha, False, self.client.bytes_out - sent_before, start)

    def _progress(self, sha: str, upload_path: str | None, offset: int, length: int) -> None:
        rate = self.sizer.rate_Bps
        self.current = UploadProgress(
            sha, upload_path, offset, length, rate and rate * 8, self.chunk_in_flight
        )

    async def _check_copy_again(self, path: Path, sha: str) -> None:
        """The last copy of ``sha`` was damaged: send this one only if it is sound."""
        actual = await asyncio.to_thread(_file_sha256, path)
        if actual != sha:
            raise BlobCopyDamaged(
                f"the device's copy of blob {sha[:12]} is damaged (its bytes hash to "
                f"{actual[:12]}), again after the cloud refused it as not matching its sha256"
            )
        self._copies_found_damaged.discard(sha)

    async def _refusal(
        self, path: Path, sha: str, refused: CloudRejected
    ) -> PermanentUploadError | RetryableUploadError:
        """What a 4xx on this upload means: try a new upload, or stop sending this blob."""
        if refused.status in _FIXED_BY_A_NEW_UPLOAD:
            self.state.forget_upload(sha)
            if refused.error == WHOLE_SHA256_MISMATCH:
                return await self._whole_mismatch(path, sha, refused)
            return RetryableUploadError(f"upload of {sha[:12]} must restart: {refused}")
        return PermanentUploadError(f"upload of {sha[:12]} refused: {refused}")

    async def _whole_mismatch(
        self, path: Path, sha: str, refused: CloudRejected
    ) -> RetryableUploadError:
        """The cloud says the whole upload does not hash to ``sha``: was our copy sound?"""
        actual = await asyncio.to_thread(_file_sha256, path)
        if actual == sha:  # damaged on the way: a new upload will do
            return RetryableUploadError(f"upload of {sha[:12]} must restart: {refused}")
        self._copies_found_damaged.add(sha)
        return RetryableUploadError(
            f"the device's copy of blob {sha[:12]} is damaged (its bytes hash to "
            f"{actual[:12]}; {refused.status} {refused.error}); the next copy is checked "
            "before it is sent"
        )

    async def _offset(self, upload_path: str, sha: str, length: int) -> int | None:
        """The server's offset of a known upload; None when it is gone (expired, removed)."""
        try:
            answer = await self.client.request(
                "HEAD", upload_path, headers={"Tus-Resumable": TUS_VERSION}, ok=(200, 204)
            )
        except CloudRejected as exc:
            if exc.status in (404, 410):
                log.info("upload %s of %s is gone on the server; starting over", upload_path, sha)
                self.state.forget_upload(sha)
                return None
            raise
        return self._claimed_offset(answer.headers, "HEAD", sha, at_most=length)

    async def _create(self, path: Path, length: int, meta: UploadMetadata) -> tuple[str, int]:
        headers = {
            "Tus-Resumable": TUS_VERSION,
            "Upload-Length": str(length),
            "Upload-Metadata": encode_metadata(meta),
        }
        body = None
        first = self.sizer.next_size()
        if 0 < length <= first:  # creation-with-upload: the whole blob in one round trip
            body = await asyncio.to_thread(path.read_bytes)
            headers["Content-Type"] = OFFSET_CONTENT_TYPE
            headers["Upload-Checksum"] = checksum_header(body)
        started = self._clock()
        answer = await self.client.request(
            "POST", UPLOADS_PATH, headers=headers, body=body, ok=(201,)
        )
        location = answer.headers.get("Location")
        if not location:
            raise CloudRejected(201, "no_location", "tus creation answered without Location")
        upload_path = urlsplit(location).path or location
        self.state.remember_upload(meta.sha256, upload_path)
        offset = 0
        if body is not None:
            offset = 0
            if "Upload-Offset" in answer.headers:
                offset = self._claimed_offset(answer.headers, "POST", meta.sha256, len(body))
            self._measured(len(body), self._clock() - started)
        return upload_path, offset

    async def _patch(
        self, upload_path: str, sha: str, offset: int, chunk: bytes, length: int
    ) -> int:
        headers = {
            "Tus-Resumable": TUS_VERSION,
            "Upload-Offset": str(offset),
            "Content-Type": OFFSET_CONTENT_TYPE,
            "Upload-Checksum": checksum_header(chunk),
        }
        for attempt in range(_CHECKSUM_RETRIES):
            started = self._clock()
            sent_before = self.client.bytes_out
            try:
                answer = await self.client.request(
                    "PATCH", upload_path, headers=headers, body=chunk, ok=(204, 200)
                )
            except CloudUnavailable:
                self._measured(self.client.bytes_out - sent_before, self._clock() - started)
                raise
            except CloudRejected as exc:
                if exc.status == 460 and attempt + 1 < _CHECKSUM_RETRIES:
                    log.warning("checksum mismatch on %s at %d; resending chunk", sha[:12], offset)
                    continue
                if exc.status == 409:  # our offset is stale: ask the server and go on
                    server_offset = await self._offset(upload_path, sha, length)
                    if server_offset is None:
                        raise RetryableUploadError(f"upload of {sha[:12]} vanished") from exc
                    return server_offset
                raise  # upload() decides: a new upload, or stop
            self._measured(len(chunk), self._clock() - started)
            new_offset = self._claimed_offset(
                answer.headers, "PATCH", sha, at_most=offset + len(chunk)
            )
            if new_offset <= offset:  # resending at once would loop at link speed
                raise RetryableUploadError(
                    f"PATCH of {len(chunk)} bytes of {sha[:12]} at {offset} made no progress "
                    f"(server Upload-Offset {new_offset}); resuming after a backoff"
                )
            if new_offset != offset + len(chunk):
                log.warning(
                    "server offset %d after PATCH of %d bytes at %d", new_offset, len(chunk), offset
                )
            return new_offset
        raise AssertionError("unreachable")  # pragma: no cover

    def _claimed_offset(self, headers: Mapping[str, str], what: str, sha: str, at_most: int) -> int:
        """The answer's Upload-Offset, which may not count bytes we never sent.

        A server (or a proxy) claiming more would have us call a blob delivered
        that the cloud does not hold; the upload is forgotten, so the retry
        starts a new one.
        """
        offset = _offset_header(headers, what)
        if offset > at_most:
            self.state.forget_upload(sha)
            raise RetryableUploadError(
                f"{what} answer for {sha[:12]} claims Upload-Offset {offset}, but at most "
                f"{at_most} bytes were sent; starting a new upload"
            )
        return offset

    def _measured(self, nbytes: int, seconds: float) -> None:
        self.sizer.observe(nbytes, seconds)
        if self.link is not None:
            self.link.observe_throughput(nbytes, seconds)


def _offset_header(headers: Mapping[str, str], what: str) -> int:
    value = headers.get("Upload-Offset")
    try:
        offset = int(str(value))
    except ValueError as exc:
        raise RetryableUploadError(f"{what} answer without a valid Upload-Offset") from exc
    if offset < 0:
        raise RetryableUploadError(f"{what} answer with negative Upload-Offset {offset}")
    return offset


def _file_sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _read_chunk(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as file:
        file.seek(offset)
        return file.read(size)
