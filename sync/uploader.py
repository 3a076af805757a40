"""Our asyncio tus 1.0.0 client for raw blobs (``/v1/uploads/``).

One call of :meth:`TusUploader.upload` moves one blob as far as the link
allows.  It is safe to call again after *any* failure, in the same process or
after a restart: the upload path is persisted (``EngineStateFile``) as soon as
the server created it, and each call first asks the server for the offset
(``HEAD``), then sends only the rest.

* A blob the cloud already holds (``HEAD /v1/blobs/{sha256}`` 200) is never sent.
* Blobs no larger than one chunk use creation-with-upload (one round trip).
* After a cut the engine asks the offsets of the uploads under way ahead, beside
  its probe (:class:`~sync.offsets_ahead.OffsetsAhead`); a resumed upload takes
  that answer instead of its own ``HEAD``.
* Every chunk carries ``Upload-Checksum: sha256 <base64>`` (a 460, mismatch,
  is retried a few times, then the upload is restarted) unless
  ``chunk_checksums()`` says not to: the engine drops them on a flaky link
  (``LinkMonitor.flaky``), because a server must void a checksummed chunk that
  was cut (it cannot verify it) but keeps the bytes of a plain one that
  arrived, so a cut then costs only what was still in the link.  The blob's
  sha256 (in the upload's metadata) is still checked by the server when the
  upload completes: a mismatch (410) restarts the upload.
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
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from sync.cloud_client import SentTally, counting_sent
from sync.engine_state import EngineStateFile
from sync.errors import (
    BlobCopyDamaged,
    CloudRejected,
    CloudUnavailable,
    PermanentUploadError,
    RetryableUploadError,
)
from sync.link import LinkMonitor
from sync.offsets_ahead import OffsetsAhead
from sync.protocol import TUS_VERSION, UploadMetadata
from sync.transport import CloudTransport
from sync.upload_state import (
    PatchRefusal,
    Refusal,
    TusUploadState,
    creation_with_upload,
    damaged_again,
    upload_gone,
)

__all__ = [
    "BlobCopyDamaged",
    "ChunkSizer",
    "TusUploader",
    "UploadOutcome",
    "UploadProgress",
    "encode_metadata",
]

log = logging.getLogger(__name__)

UPLOADS_PATH: Final = "/v1/uploads/"
OFFSET_CONTENT_TYPE: Final = "application/offset+octet-stream"
WIRE_SHARE_FLOOR: Final = 0.1  # a chunk's time on the wire is at least this share of its request


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
    """Pure: the next chunk size from the measured throughput (EWMA).

    Several uploads share the link (``sync.raw_lanes``, which also caps the
    size by its plan): a chunk sent while ``concurrent`` chunks were on the wire
    saw that share of the link.
    """

    def __init__(self, min_bytes: int, max_bytes: int, target_s: float) -> None:
        if not 0 < min_bytes <= max_bytes or target_s <= 0:
            raise ValueError("need 0 < min_bytes <= max_bytes and target_s > 0")
        self.min_bytes, self.max_bytes, self.target_s = min_bytes, max_bytes, target_s
        self._rate: float | None = None  # bytes per second
        self._last = min_bytes

    @property
    def rate_Bps(self) -> float | None:  # bytes (B) per second
        return self._rate

    def observe(self, nbytes: int, seconds: float, *, concurrent: float = 1.0) -> None:
        if nbytes <= 0 or not seconds > 0:
            return
        # a timer tick is not an infinitely fast link
        sample = nbytes * max(1.0, concurrent) / max(seconds, 1e-3)
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
    paused: bool = False  # stopped at a chunk boundary (``go_on``): not done, resume later


class TusUploader:
    """Uploads blobs over ``client``; remembers upload paths in ``state``.

    The decisions are :class:`~sync.upload_state.TusUploadState`'s; this class
    sends the requests, reads the file and keeps the state file in step.
    """

    def __init__(
        self,
        client: CloudTransport,
        state: EngineStateFile,
        sizer: ChunkSizer,
        *,
        link: LinkMonitor | None = None,
        clock: Callable[[], float] = time.monotonic,
        chunk_checksums: Callable[[], bool] = lambda: True,
    ) -> None:
        self.client = client
        self.chunk_checksums = chunk_checksums  # False: PATCHes go without Upload-Checksum
        self.state = state
        self.sizer = sizer
        self.link = link
        self._clock = clock
        self.uploads: dict[str, UploadProgress] = {}  # by sha256: the uploads under way
        self.offsets_ahead = OffsetsAhead(client)  # HEADs sent while the link comes back
        self.chunk_in_flight = 0  # size of the chunk being (or last) sent
        self.chunk_cap: int | None = None  # set by sync.raw_lanes: its plan's chunk size
        self._chunks_flying = 0  # requests with a body on the wire now, all uploads
        self.min_rtt_s: float | None = None  # the least round trip the link monitor saw
        self._copies_found_damaged: set[str] = set()  # sha256s: hash the next copy first

    @property
    def current(self) -> UploadProgress | None:
        """One upload under way (the first started), for a one-line status."""
        return next(iter(self.uploads.values()), None)

    async def upload(
        self, path: Path, meta: UploadMetadata, go_on: Callable[[], Awaitable[bool]] | None = None
    ) -> UploadOutcome:
        """Upload the file at ``path`` (its sha256 is ``meta.sha256``) or resume it.

        ``go_on`` is awaited before each request that may carry bytes of the blob
        (the creating POST, each PATCH; it may hold them back while something more
        urgent is sent): False stops there (``paused``; the upload path is kept, a
        later call resumes it).
        """
        with counting_sent() as tally:
            return await self._upload(path, meta, go_on, tally)

    async def _upload(
        self,
        path: Path,
        meta: UploadMetadata,
        go_on: Callable[[], Awaitable[bool]] | None,
        tally: SentTally,
    ) -> UploadOutcome:
        sha = meta.sha256
        if sha in self._copies_found_damaged:
            await self._check_copy_again(path, sha)
        length = (await asyncio.to_thread(path.stat)).st_size
        upload = TusUploadState(sha, length, self.state.upload_path(sha))
        try:
            if upload.upload_path is not None:
                await self._resume(upload)
            if upload.upload_path is None:
                if await self.client.blob_held(sha):
                    self.state.forget_upload(sha)
                    return UploadOutcome(sha, True, 0, 0)
                if go_on is not None and not await go_on():  # the POST may carry the blob
                    return UploadOutcome(sha, False, tally.bytes, 0, paused=True)
                await self._create(path, upload, meta)
            self._progress(upload, 0)
            while not upload.done:
                if go_on is not None and not await go_on():
                    return UploadOutcome(sha, False, tally.bytes, upload.started_at, paused=True)
                size = self._chunk_size()
                chunk = await asyncio.to_thread(_read_chunk, path, upload.offset, size)
                if not chunk:
                    raise PermanentUploadError(f"{path} shrank below {length} bytes")
                self.chunk_in_flight = len(chunk)
                self._progress(upload, len(chunk))
                await self._patch(upload, chunk)
                self._progress(upload, 0)
        except CloudUnavailable as exc:
            raise RetryableUploadError(
                f"upload of {sha[:12]} interrupted: {exc}", unanswered=exc.unanswered
            ) from exc
        except CloudRejected as exc:
            raise await self._refusal(path, upload, exc) from exc
        finally:
            self.uploads.pop(sha, None)
            self._forget_if_told(upload)
        self.state.forget_upload(sha)
        return UploadOutcome(sha, False, tally.bytes, upload.started_at)

    def _chunk_size(self) -> int:
        size = self.sizer.next_size()
        return size if self.chunk_cap is None else max(1, min(size, self.chunk_cap))

    def _forget_if_told(self, upload: TusUploadState) -> None:
        if upload.forget:
            upload.forget = False
            self.state.forget_upload(upload.sha256)

    def _progress(self, upload: TusUploadState, chunk_bytes: int) -> None:
        rate = self.sizer.rate_Bps
        self.uploads[upload.sha256] = UploadProgress(
            upload.sha256,
            upload.upload_path,
            upload.offset,
            upload.length,
            rate and rate * 8,
            chunk_bytes,
        )

    async def _check_copy_again(self, path: Path, sha: str) -> None:
        """The last copy of ``sha`` was damaged: send this one only if it is sound."""
        damaged = damaged_again(sha, await asyncio.to_thread(_file_sha256, path))
        if damaged is not None:
            raise damaged
        self._copies_found_damaged.discard(sha)

    async def _refusal(
        self, path: Path, upload: TusUploadState, refused: CloudRejected
    ) -> PermanentUploadError | RetryableUploadError:
        """What a 4xx on this upload means: try a new upload, or stop sending this blob."""
        sha = upload.sha256
        verdict = upload.refused(refused.status, refused.error)
        self._forget_if_told(upload)
        if verdict is Refusal.STOP:
            return PermanentUploadError(f"upload of {sha[:12]} refused: {refused}")
        if verdict is Refusal.RESTART:
            return RetryableUploadError(f"upload of {sha[:12]} must restart: {refused}")
        actual = await asyncio.to_thread(_file_sha256, path)
        damaged, error = upload.copy_checked(actual, refused)
        if damaged:
            self._copies_found_damaged.add(sha)
        return error

    async def _head(self, upload: TusUploadState) -> Mapping[str, str] | None:
        """The HEAD answer of the upload; None when it is gone (expired, removed)."""
        assert upload.upload_path is not None
        try:
            answer = await self.client.request(
                "HEAD", upload.upload_path, headers={"Tus-Resumable": TUS_VERSION}, ok=(200, 204)
            )
        except CloudRejected as exc:
            if upload_gone(exc.status):
                log.info(
                    "upload %s of %s is gone on the server; starting over",
                    upload.upload_path,
                    upload.sha256,
                )
                self.state.forget_upload(upload.sha256)
                return None
            raise
        return answer.headers

    async def _resume(self, upload: TusUploadState) -> None:
        assert upload.upload_path is not None
        headers = await self.offsets_ahead.take(upload.sha256, upload.upload_path)
        if headers is None:
            headers = await self._head(upload)
        if headers is None:
            upload.gone()
            upload.forget = False  # _head forgot it already
            return
        upload.resumed(headers)

    async def _create(self, path: Path, upload: TusUploadState, meta: UploadMetadata) -> None:
        headers = {
            "Tus-Resumable": TUS_VERSION,
            "Upload-Length": str(upload.length),
            "Upload-Metadata": encode_metadata(meta),
        }
        body = None
        if creation_with_upload(upload.length, self._chunk_size()):
            body = await asyncio.to_thread(path.read_bytes)
            headers["Content-Type"] = OFFSET_CONTENT_TYPE
            headers["Upload-Checksum"] = checksum_header(body)
            self._progress(upload, len(body))  # under way: the whole blob goes in the POST
        started = self._clock()
        with self._flying(body is not None) as concurrent:
            answer = await self.client.request(
                "POST", UPLOADS_PATH, headers=headers, body=body, ok=(201,)
            )
        location = answer.headers.get("Location")
        if not location:
            raise CloudRejected(201, "no_location", "tus creation answered without Location")
        upload_path = urlsplit(location).path or location
        self.state.remember_upload(meta.sha256, upload_path)
        upload.created(upload_path, answer.headers, 0 if body is None else len(body))
        if body is not None:
            self.chunk_in_flight = len(body)
            self._measured(len(body), self._clock() - started, concurrent[0])

    async def _patch(self, upload: TusUploadState, chunk: bytes) -> None:
        assert upload.upload_path is not None
        headers = {
            "Tus-Resumable": TUS_VERSION,
            "Upload-Offset": str(upload.offset),
            "Content-Type": OFFSET_CONTENT_TYPE,
        }
        if self.chunk_checksums():  # a server voids a checksummed chunk that was cut
            headers["Upload-Checksum"] = checksum_header(chunk)
        while True:
            started = self._clock()
            try:
                with counting_sent() as sent, self._flying(True) as concurrent:
                    answer = await self.client.request(
                        "PATCH", upload.upload_path, headers=headers, body=chunk, ok=(204, 200)
                    )
            except CloudUnavailable:
                # bytes handed to the socket before a cut: the link's estimate only
                if self.link is not None and sent.bytes > 0:
                    self.link.observe_throughput(sent.bytes, self._clock() - started)
                raise
            except CloudRejected as exc:
                step = upload.patch_refused(exc.status)
                if step is PatchRefusal.RESEND:
                    log.warning(
                        "checksum mismatch on %s at %d; resending chunk",
                        upload.sha256[:12],
                        upload.offset,
                    )
                    continue
                if step is PatchRefusal.ASK_OFFSET:  # our offset is stale: ask the server
                    server = await self._head(upload)
                    if server is None:  # _head forgot it already
                        upload.gone()
                        upload.forget = False
                        raise RetryableUploadError(
                            f"upload of {upload.sha256[:12]} vanished"
                        ) from exc
                    upload.offset_asked(server)
                    return
                raise  # upload() decides: a new upload, or stop
            self._measured(len(chunk), self._clock() - started, concurrent[0])
            at = upload.offset
            if upload.patch_answered(len(chunk), answer.headers):
                log.warning(
                    "server offset %d after PATCH of %d bytes at %d", upload.offset, len(chunk), at
                )
            return

    @contextlib.contextmanager
    def _flying(self, with_body: bool) -> Iterator[list[float]]:
        """Count a request with a body on the wire; the list yielded holds, once it is
        done, how many bodies' worth it waited behind, its own included: the link
        is one queue, those already on the wire when it started are half sent on
        average, those started after it queue behind it."""
        share = [1.0]
        if not with_body:
            yield share
            return
        self._chunks_flying += 1
        at_start = self._chunks_flying
        try:
            yield share
        finally:
            share[0] = (at_start + 1) / 2
            self._chunks_flying -= 1

    def _measured(self, nbytes: int, seconds: float, concurrent: float = 1.0) -> None:
        """A body of ``nbytes`` took ``seconds`` (its answer's round trip included) while
        ``concurrent`` bodies shared the link.

        Its time on the wire is ``seconds`` less the round trip: the least one
        measured (a round trip measured behind queued chunks is too long, and a
        rate measured with it too low, so small chunks would never grow)."""
        rtt_ms = None if self.link is None else self.link.snapshot().rtt_ms
        if rtt_ms is not None:
            rtt = rtt_ms / 1000
            self.min_rtt_s = rtt if self.min_rtt_s is None else min(self.min_rtt_s, rtt)
        if self.min_rtt_s is not None:
            seconds = max(seconds - self.min_rtt_s, seconds * WIRE_SHARE_FLOOR)
        self.sizer.observe(nbytes, seconds, concurrent=concurrent)
        if self.link is not None and nbytes > 0:
            self.link.observe_throughput(int(nbytes * max(1.0, concurrent)), seconds)


def _file_sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _read_chunk(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as file:
        file.seek(offset)
        return file.read(size)
