"""Streaming one PATCH body onto disk, one read buffer at a time.

The bytes go straight to the upload's data file at the offset and are
fsync'd (once) before the answer.  Without a checksum an interrupted request
keeps what arrived (fsync'd).  With a checksum the chunk is verified once
complete, and on a mismatch or a cut the data file is cut back, so the offset
is unchanged; the store's guard (``chunk_guard.py``) makes sure a crash never
leaves an unverified byte counted either.

When the upload's metadata names a sha256, the running sha256 of the whole
upload (``digests.py``) is advanced with the same buffers, so completion does
not read the file again.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import BinaryIO

from aiohttp import StreamReader

from cloud_ingest.errors import ChecksumMismatch, PayloadTooLarge
from cloud_ingest.tus.core import PatchPlan
from cloud_ingest.tus.headers import Checksum
from cloud_ingest.tus.pending import PendingChunk
from cloud_ingest.tus.store import UploadStore

__all__ = ["READ_SIZE", "receive_body"]

READ_SIZE = 256 * 1024


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


async def receive_body(  # noqa: PLR0913
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
    f = store.data_path(upload_id).open("r+b")
    chunk_hash = chunk = None
    if checksum is not None:
        chunk_hash = checksum.new_hash()
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
            if chunk_hash is not None:
                chunk_hash.update(piece)
            if whole is not None:
                whole.update(piece)
    except BaseException:
        # a cut: keep what arrived, unless it cannot be verified
        if chunk is not None:
            _cut_back(store, upload_id, f, plan.offset, chunk)
        else:
            _keep(store, upload_id, f, plan.offset + written, None)
            if whole is not None:
                store.digests.advance(upload_id, plan.offset + written, whole)
        raise
    if too_large:
        await asyncio.to_thread(_cut_back, store, upload_id, f, plan.offset, chunk)
        raise PayloadTooLarge("the body passes the end of the upload")
    if checksum is not None and chunk_hash is not None and chunk_hash.digest() != checksum.digest:
        await asyncio.to_thread(_cut_back, store, upload_id, f, plan.offset, chunk)
        raise ChecksumMismatch(f"{checksum.algorithm} of the chunk does not match")
    offset = plan.offset + written
    await asyncio.to_thread(_keep, store, upload_id, f, offset, chunk)
    if whole is not None:
        store.digests.advance(upload_id, offset, whole)
    return offset
