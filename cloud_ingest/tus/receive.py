"""Streaming one PATCH body onto disk, one read buffer at a time.

Without a checksum the bytes go straight to the upload's data file, so an
interrupted request keeps what arrived (fsync'd in ``finally``).  With a
checksum they go to a side file, are verified, and only then appended; on a
mismatch (or a cut) the side file is dropped and the offset stays unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass

from aiohttp import StreamReader

from cloud_ingest.errors import ChecksumMismatch, PayloadTooLarge
from cloud_ingest.tus.core import PatchPlan
from cloud_ingest.tus.headers import Checksum
from cloud_ingest.tus.store import UploadStore

__all__ = ["READ_SIZE", "RunningDigest", "receive_body"]

READ_SIZE = 256 * 1024


@dataclass(slots=True)
class RunningDigest:
    """sha256 of an upload's first ``offset`` bytes, kept between PATCHes."""

    offset: int
    digest: hashlib._Hash


async def receive_body(  # noqa: PLR0913
    store: UploadStore,
    upload_id: str,
    content: StreamReader,
    plan: PatchPlan,
    checksum: Checksum | None,
    running: RunningDigest | None,
) -> tuple[int, RunningDigest | None]:
    """Write the body; return the new offset and the advanced running digest."""
    side = checksum is not None
    path = store.chunk_path(upload_id) if side else store.data_path(upload_id)
    chunk_hash = checksum.new_hash() if checksum is not None else None
    follow = running is not None and running.offset == plan.offset
    run = running.digest.copy() if running is not None and follow else None
    written = 0
    too_large = False
    f = path.open("wb" if side else "r+b")
    try:
        if not side:
            f.seek(plan.offset)
        while piece := await content.read(READ_SIZE):
            if written + len(piece) > plan.limit:
                too_large = True
                break
            f.write(piece)
            written += len(piece)
            if chunk_hash is not None:
                chunk_hash.update(piece)
            if run is not None:
                run.update(piece)
    except BaseException:
        if side:  # a cut checksummed chunk cannot be verified: drop it
            path.unlink(missing_ok=True)
        raise
    finally:
        f.flush()
        os.fsync(f.fileno())
        f.close()
    if too_large:
        _discard(store, upload_id, plan.offset, side)
        raise PayloadTooLarge("the body passes the end of the upload")
    if checksum is not None and chunk_hash is not None:
        if chunk_hash.digest() != checksum.digest:
            _discard(store, upload_id, plan.offset, side)
            raise ChecksumMismatch(f"{checksum.algorithm} of the chunk does not match")
        await asyncio.to_thread(store.append_chunk, upload_id, plan.offset)
    new_offset = plan.offset + written
    return new_offset, (RunningDigest(new_offset, run) if run is not None else None)


def _discard(store: UploadStore, upload_id: str, offset: int, side: bool) -> None:
    if side:
        store.chunk_path(upload_id).unlink(missing_ok=True)
        return
    with store.data_path(upload_id).open("r+b") as f:
        f.truncate(offset)
        os.fsync(f.fileno())
