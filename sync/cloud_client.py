"""The HTTP edge of the sync engine: one aiohttp session to the ingest service.

Every request carries the device's bearer token.  Request bodies are written
in pieces paced by the global :class:`~sync.scheduler.TokenBucket` (the
bandwidth cap), and every byte handed to the socket is counted.

Every request ends within a bound, whatever the peer or the link does (aiohttp
alone starts ``sock_read`` only once a body is written, and waits for a pooled
connection without end): a free connection or a new one within
``connect_timeout_s + request_timeout_s``; each piece of the body taken by the
socket within ``request_timeout_s`` (a body that stops moving ends the request);
then the whole answer within ``request_timeout_s`` (a request without a body: its
answer within that bound after the connection's).  Each bound that passes is a
:class:`CloudUnreachable`: no answer came.

Failures become typed errors that say what to do:

* :class:`CloudUnavailable` (retryable): 5xx, 408, 423, 429 - the service is in
  trouble; back off and try again.  Its :class:`CloudUnreachable`: no answer at
  all (refused, reset, timeout) - the link or the host is down; probe for it.
* :class:`CloudRejected` (permanent): a 4xx with the service's JSON
  ``{"error", "detail"}``; the same request will fail again.
* :class:`BatchConflict`: 409 on a batch - the id is held with other bytes.
* :class:`BatchOverlap`: 412 on a batch - some of its seqs are held under another id.
* :class:`~sync.errors.ProtocolError`: a 2xx whose body is not what the
  protocol says (malformed handshake answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Final, TypeVar

import aiohttp
from multidict import CIMultiDict
from pydantic import BaseModel, SecretStr, ValidationError

from sync.errors import (
    BatchConflict,
    BatchOverlap,
    CloudRejected,
    CloudUnavailable,
    CloudUnreachable,
    ProtocolError,
)
from sync.protocol import (
    BATCH_CONTENT_TYPE,
    NO_OVERLAP_HEADER,
    BatchAck,
    SyncRequest,
    SyncResponse,
)
from sync.scheduler import TokenBucket

__all__ = [
    "BatchConflict",
    "BatchOverlap",
    "CloudClient",
    "CloudRejected",
    "CloudUnavailable",
    "HttpAnswer",
    "SentTally",
    "counting_sent",
]

log = logging.getLogger(__name__)

PIECE_BYTES: Final = 16 << 10
# raw uploads in flight (sync.raw_lanes.MAX_LANES) plus metadata PUTs and a handshake
CONNECTIONS: Final = 12
M = TypeVar("M", bound=BaseModel)


@dataclass(slots=True)
class SentTally:
    """Body bytes handed to the socket by the requests of one task (and its children)."""

    bytes: int = 0
    parents: list[SentTally] = field(default_factory=list)

    def add(self, nbytes: int) -> None:
        self.bytes += nbytes
        for parent in self.parents:
            parent.bytes += nbytes


_TALLY: ContextVar[SentTally | None] = ContextVar("sync_sent_tally", default=None)


@contextlib.contextmanager
def counting_sent() -> Iterator[SentTally]:
    """Count the body bytes this task's requests hand to the socket.

    Several uploads share one transport at once, so its ``bytes_out`` cannot say
    which bytes were whose; a tally set here follows the task (and the tasks it
    starts, which aiohttp does to write a body), nested tallies count too.
    """
    outer = _TALLY.get()
    tally = SentTally(parents=[] if outer is None else [outer, *outer.parents])
    token = _TALLY.set(tally)
    try:
        yield tally
    finally:
        _TALLY.reset(token)


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: Mapping[str, str]
    body: bytes


class CloudClient:
    """Talks to ``base_url`` (e.g. ``http://127.0.0.1:8080``); close with ``await close()``."""

    def __init__(
        self,
        base_url: str,
        token: str | SecretStr,
        *,
        bucket: TokenBucket | None = None,
        request_timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.bucket = bucket or TokenBucket(None)
        self.bytes_out = 0  # request body bytes handed to the socket, all requests
        if isinstance(token, SecretStr):  # as the settings hold it: never printed
            token = token.get_secret_value()
        self._headers = {"Authorization": f"Bearer {token}"}
        self.request_timeout_s = request_timeout_s  # the longest silence a request waits out
        self.connections = CONNECTIONS  # requests on the wire at once; more wait for one
        # A pooled connection is free once the request holding it ends, within its bounds:
        # a longer wait (or connect) means none will come.
        self._acquire_s = connect_timeout_s + request_timeout_s
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self._acquire_s,
            sock_connect=connect_timeout_s,
            sock_read=request_timeout_s,
        )
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=self.connections, force_close=False),
            )
        return self._session

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    async def paced(
        self, body: bytes, deadline: asyncio.Timeout | None = None
    ) -> AsyncIterator[bytes]:
        """Yield ``body`` in pieces, each after the bandwidth cap allows it.

        With ``deadline`` (the request's): each piece must be taken by the socket
        within ``request_timeout_s`` (aiohttp resumes this generator once it is), and
        after the last one the answer must come within that bound too.  The waits
        for the bandwidth cap are ours, not the peer's: no bound runs meanwhile."""
        loop = asyncio.get_running_loop()
        view = memoryview(body)
        for start in range(0, len(body), PIECE_BYTES):
            piece = view[start : start + PIECE_BYTES]
            delay = self.bucket.reserve(len(piece), time.monotonic())
            if delay > 0:
                if deadline is not None:
                    deadline.reschedule(None)
                await asyncio.sleep(delay)
            if deadline is not None:
                deadline.reschedule(loop.time() + self.request_timeout_s)
            yield bytes(piece)
            self.bytes_out += len(piece)
            tally = _TALLY.get()
            if tally is not None:
                tally.add(len(piece))
        if deadline is not None:  # the body is on its way: now the answer
            deadline.reschedule(loop.time() + self.request_timeout_s)

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
    ) -> HttpAnswer:
        """One request; raises the typed errors above for anything not in ``ok``."""
        all_headers = dict(headers or {})
        loop = asyncio.get_running_loop()
        data: AsyncIterator[bytes] | None = None
        try:
            # The request's own deadline (see the module's doc); aiohttp's bounds the
            # wait for a connection.
            async with asyncio.timeout(None) as deadline:
                if body is not None:
                    all_headers["Content-Length"] = str(len(body))
                    data = self.paced(body, deadline)
                else:
                    deadline.reschedule(loop.time() + self._acquire_s + self.request_timeout_s)
                async with self._http().request(
                    method, self.url(path), headers=all_headers, data=data
                ) as response:
                    payload = await response.read()
                    answer = HttpAnswer(response.status, CIMultiDict(response.headers), payload)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if deadline.expired():
                what = "no answer" if body is None else "no body bytes taken, or no answer"
                raise CloudUnreachable(
                    f"{method} {path}: {what} within {self.request_timeout_s:g} s"
                ) from exc
            raise CloudUnreachable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if answer.status in ok:
            return answer
        raise _error_for(method, path, answer)

    # ------------------------------------------------------------------ protocol calls

    async def handshake(self, request: SyncRequest) -> SyncResponse:
        body = request.model_dump_json(exclude_none=True).encode()
        answer = await self.request(
            "POST", "/v1/sync", headers={"Content-Type": "application/json"}, body=body
        )
        return _parse(SyncResponse, answer, "handshake answer")

    async def put_batch(self, batch_id: str, body: bytes) -> BatchAck:
        """Store a batch unless the cloud holds any of its seqs under another id."""
        try:
            answer = await self.request(
                "PUT",
                f"/v1/batches/{batch_id}",
                headers={"Content-Type": BATCH_CONTENT_TYPE, NO_OVERLAP_HEADER: "1"},
                body=body,
            )
        except CloudRejected as exc:
            if exc.status == 409:
                raise BatchConflict(exc.status, exc.error, exc.detail) from exc
            if exc.status == 412:
                raise BatchOverlap(exc.status, exc.error, exc.detail) from exc
            raise
        return _parse(BatchAck, answer, f"batch {batch_id} answer")

    async def blob_held(self, sha256: str) -> bool:
        answer = await self.request("HEAD", f"/v1/blobs/{sha256}", ok=(200, 404))
        return answer.status == 200


def _parse(model: type[M], answer: HttpAnswer, what: str) -> M:
    try:
        return model.model_validate_json(answer.body)
    except ValidationError as exc:
        raise ProtocolError(f"malformed {what}: {exc.errors()[:3]!r}") from exc


def _error_for(method: str, path: str, answer: HttpAnswer) -> CloudUnavailable | CloudRejected:
    error, detail = f"http_{answer.status}", answer.body[:200].decode("utf-8", "replace")
    try:
        parsed = json.loads(answer.body)
    except ValueError:
        parsed = None  # not JSON (a proxy's page): the status and the raw body say it
    if isinstance(parsed, dict):
        error = str(parsed.get("error", error))
        detail = str(parsed.get("detail", detail))
    if answer.status >= 500 or answer.status in (408, 423, 429):
        return CloudUnavailable(f"{method} {path}: HTTP {answer.status} {error}: {detail}")
    return CloudRejected(answer.status, error, detail)
