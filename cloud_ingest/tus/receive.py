"""Streaming one PATCH body onto disk, one read buffer at a time.

The bytes go straight to the upload's data file at the offset.  Without a
checksum an interrupted request keeps what arrived (fsync'd).  With a
checksum a ``<id>.pending`` marker holding the start offset is written first;
the chunk is verified once complete, and on a mismatch, a cut or a crash
(the store truncates to the marker's offset on start) the data file is cut
back, so the offset is unchanged and no unverified byte is ever counted.
"""

from __future__ import annotations

import asyncio
import os
from typing import BinaryIO

from aiohttp import StreamReader

from cloud_ingest.errors import ChecksumMismatch, PayloadTooLarge
from cloud_ingest.tus.core import PatchPlan
from cloud_ingest.tus.headers import Checksum
from cloud_ingest.tus.store import UploadStore

__all__ = ["READ_SIZE", "receive_body"]

READ_SIZE = 256 * 1024


def _sync_and_close(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()


def _cut_back(f: BinaryIO, offset: int) -> None:
    f.flush()
    f.truncate(offset)
    _sync_and_close(f)


async def receive_body(
    store: UploadStore,
    upload_id: str,
    content: StreamReader,
    plan: PatchPlan,
    checksum: Checksum | None,
) -> int:
    """Write the body at ``plan.offset``; return the new offset."""
    chunk_hash = checksum.new_hash() if checksum is not None else None
    if chunk_hash is not None:
        await asyncio.to_thread(store.mark_pending, upload_id, plan.offset)
    f = store.data_path(upload_id).open("r+b")
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
    except BaseException:
        # a cut: keep what arrived, unless it cannot be verified
        if chunk_hash is not None:
            _cut_back(f, plan.offset)
            store.clear_pending(upload_id)
        else:
            _sync_and_close(f)
        raise
    if too_large:
        await asyncio.to_thread(_cut_back, f, plan.offset)
        store.clear_pending(upload_id)
        raise PayloadTooLarge("the body passes the end of the upload")
    if checksum is not None and chunk_hash is not None and chunk_hash.digest() != checksum.digest:
        await asyncio.to_thread(_cut_back, f, plan.offset)
        store.clear_pending(upload_id)
        raise ChecksumMismatch(f"{checksum.algorithm} of the chunk does not match")
    await asyncio.to_thread(_sync_and_close, f)
    if chunk_hash is not None:
        store.clear_pending(upload_id)
    return plan.offset + written
