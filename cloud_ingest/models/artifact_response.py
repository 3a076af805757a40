"""Answer ``GET .../artifact`` from the object store, honouring ``Range`` (resumed downloads).

A local store answers with a ``FileResponse`` (sendfile, aiohttp's own Range
handling); an S3 store streams the requested bytes with ranged reads, so any
instance serves any artifact.  Both answer a ``Range: bytes=N-`` with 206 and
``Content-Range``, a range past the end with 416.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from aiohttp import web

from cloud_ingest.errors import IngestError, NotFound
from cloud_ingest.object_store import LocalObjectStore, ObjectStore

__all__ = ["RangeNotSatisfiable", "artifact_response", "byte_range"]

TAR = "application/x-tar"


class RangeNotSatisfiable(IngestError):
    status, error = 416, "range_not_satisfiable"


def byte_range(request: web.Request, size: int) -> tuple[int, int] | None:
    """The ``[start, stop)`` a ``Range`` header asks of ``size`` bytes; None for all of them.

    :class:`RangeNotSatisfiable` for a malformed range or one starting past the end.
    """
    refused = RangeNotSatisfiable(
        f"the artifact has {size} bytes", headers={"Content-Range": f"bytes */{size}"}
    )
    try:
        wanted = request.http_range
    except ValueError:
        raise refused from None
    if wanted.start is None and wanted.stop is None:
        return None
    start, stop = wanted.start, wanted.stop
    if start is None:  # a suffix range cannot parse to this; aiohttp gives (-N, None)
        start = 0
    if start < 0:
        start, stop = max(size + start, 0), size
    stop = size if stop is None else min(stop, size)
    if start >= stop:
        raise refused
    return start, stop


async def artifact_response(
    request: web.Request, objects: ObjectStore, key: str, size: int
) -> web.StreamResponse:
    """The artifact ``key`` (``size`` bytes, as its release records) or the range asked."""
    if isinstance(objects, LocalObjectStore):
        return web.FileResponse(objects.path(key), headers={"Content-Type": TAR})
    wanted = byte_range(request, size)
    start, stop = wanted if wanted is not None else (0, size)
    pieces = objects.iter_range(key, start, stop - start)
    try:  # the first piece before the headers: a missing object or an outage answers cleanly
        first = await asyncio.to_thread(_next_piece, pieces)
    except FileNotFoundError:
        raise NotFound("the release's artifact is missing from the object store") from None
    headers = {"Content-Type": TAR, "Accept-Ranges": "bytes", "Content-Length": str(stop - start)}
    if wanted is not None:
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    response = web.StreamResponse(status=206 if wanted is not None else 200, headers=headers)
    await response.prepare(request)
    piece = first
    while piece:  # an outage mid-way cuts the answer: the device resumes with Range
        await response.write(piece)
        piece = await asyncio.to_thread(_next_piece, pieces)
    await response.write_eof()
    return response


def _next_piece(pieces: Iterator[bytes]) -> bytes:
    return next(pieces, b"")
