"""Streaming one PATCH body onto disk, one read buffer at a time.

The event loop only moves the bytes from the socket to the upload's data file
at the offset.  Once the body is complete, one worker-thread step reads the
chunk back from the page cache and hashes it -- the chunk's ``Upload-Checksum``
and, when the upload's metadata names a sha256, the upload's running sha256
(``digests.py``) in the same pass, so completion need not read the file again
-- then tells the store's guard and fsyncs once before the answer.

Without a checksum an interrupted request keeps what arrived (fsync'd, on a
worker thread like every fsync here).  With
a checksum, a mismatch or a cut cuts the data file back, so the offset is
unchanged; the guard (``chunk_guard.py``) makes sure a crash never leaves an
unverified byte counted either.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from functools import partial
from typing import BinaryIO

from aiohttp import StreamReader

from cloud_ingest.errors import ChecksumMismatch, PayloadTooLarge
from cloud_ingest.tus.core import PatchPlan
from cloud_ingest.tus.headers import Checksum
from cloud_ingest.tus.pending import PendingChunk
from cloud_ingest.tus.settle import settle
from cloud_ingest.tus.store import UploadStore

__all__ = ["READ_SIZE", "receive_body"]

READ_SIZE = 256 * 1024
_HASH_BACK_SIZE = 1 << 20


def _sync_and_close(f: BinaryIO) -> None:
    try:
        f.flush()
        os.fsync(f.fileno())
    finally:
        f.close()


def _cut_back(
    store: UploadStore, upload_id: str, f: BinaryIO, start: int, chunk: PendingChunk | None
) -> None:
    """Drop refused bytes: truncate to ``start``, fsync, then settle the guard."""
    try:
        f.flush()
        f.truncate(start)
    finally:
        _sync_and_close(f)
    if chunk is not None:
        store.guard.settle(upload_id, chunk, None)


def _hash_back(f: BinaryIO, start: int, length: int, digests: list[hashlib._Hash]) -> None:
    """Update ``digests`` with ``length`` bytes of ``f`` from ``start`` (the page cache)."""
    buffer = memoryview(bytearray(min(length, _HASH_BACK_SIZE)))
    while length > 0:
        n = os.preadv(f.fileno(), [buffer[: min(length, len(buffer))]], start)
        if n == 0:
            raise OSError(f"{f.name}: {length} bytes missing at {start}")
        for digest in digests:
            digest.update(buffer[:n])
        start += n
        length -= n


def _keep(
    store: UploadStore, upload_id: str, f: BinaryIO, offset: int, chunk: PendingChunk | None
) -> None:
    """Keep the bytes below ``offset``: tell the guard, one fsync for both, settle."""
    try:
        f.flush()
        store.guard.keep(f, offset, checksummed=chunk is not None)
    finally:
        _sync_and_close(f)
    if chunk is not None:
        store.guard.settle(upload_id, chunk, offset - chunk.start)


def _check_and_keep(
    store: UploadStore,
    upload_id: str,
    f: BinaryIO,
    start: int,
    end: int,
    chunk: PendingChunk | None,
    whole: hashlib._Hash | None,
) -> None:
    """Keep the bytes in ``[start, end)`` if they pass the chunk's checksum (on a worker thread).

    The bytes are hashed back from the page cache (the chunk's checksum and
    the running sha256 in one pass); a mismatch cuts them back and raises
    :class:`ChecksumMismatch` (460), else the guard is told and one fsync
    makes all of it durable.
    """
    try:
        f.flush()
        chunk_hash = None
        if chunk is not None and chunk.algorithm is not None:
            chunk_hash = hashlib.new(chunk.algorithm)
        digests = [h for h in (chunk_hash, whole) if h is not None]
        if digests:
            _hash_back(f, start, end - start, digests)
    except BaseException:
        f.close()
        raise
    if chunk is not None and (chunk_hash is None or chunk_hash.digest() != chunk.digest):
        _cut_back(store, upload_id, f, start, chunk)
        raise ChecksumMismatch(f"{chunk.algorithm} of the chunk does not match")
    _keep(store, upload_id, f, end, chunk)


async def receive_body(
    store: UploadStore,
    upload_id: str,
    content: StreamReader,
    plan: PatchPlan,
    checksum: Checksum | None,
    *,
    content_length: int | None,
    whole: hashlib._Hash | None,
) -> int:
    """Write the body at ``plan.offset``; return the new offset.

    ``whole`` is the running sha256 of the upload at ``plan.offset`` (or None
    when it is not kept); it is handed to ``store.digests`` advanced by the
    bytes that are kept.
    """
    if store.chunks is not None:  # fleet mode: one part object per kept body
        return await store.chunks.receive(upload_id, content, plan, checksum)
    f = store.data_path(upload_id).open("r+b")
    chunk = None
    if checksum is not None:
        chunk = PendingChunk(plan.offset, content_length, checksum.algorithm, checksum.digest)
        if not store.guard.ready_for(f, plan.offset):
            try:
                await asyncio.to_thread(store.guard.arm, upload_id, f, chunk)
            except BaseException:
                f.close()
                raise
    written = 0
    too_large = False
    try:
        f.seek(plan.offset)
        while piece := await content.read(READ_SIZE):
            if written + len(piece) > plan.limit:
                too_large = True
                break
            f.write(piece)
            written += len(piece)
    except BaseException:
        # a cut: keep what arrived, unless it cannot be verified
        if chunk is not None:
            await settle(partial(_cut_back, store, upload_id, f, plan.offset, chunk))
        else:
            end = plan.offset + written
            keep = partial(_check_and_keep, store, upload_id, f, plan.offset, end, None, whole)
            await settle(keep)
            if whole is not None:
                store.digests.advance(upload_id, end, whole)
        raise
    if too_large:
        await asyncio.to_thread(_cut_back, store, upload_id, f, plan.offset, chunk)
        raise PayloadTooLarge("the body passes the end of the upload")
    offset = plan.offset + written
    await asyncio.to_thread(_check_and_keep, store, upload_id, f, plan.offset, offset, chunk, whole)
    if whole is not None:
        store.digests.advance(upload_id, offset, whole)
    return offset
