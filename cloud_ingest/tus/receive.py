"""Streaming one PATCH body onto disk, one read buffer at a time.

The event loop only reads the body from the socket, each buffer as it arrived
(``readchunk``: never joined into larger pieces, which would copy every byte
once more on the loop).  The pieces it reads are
handed, a MiB at a time, to a worker thread that writes them at their offset
in the upload's data file and hashes them -- the chunk's ``Upload-Checksum``
and, when the upload's metadata names a sha256, the upload's running sha256
(``digests.py``), so completion need not read the file again -- while the loop
reads on (:class:`_BodyWriter`: one hand-over in flight, so about two MiB are
held at most).
Once the body is complete one more worker-thread step writes the pieces still
held (the last MiB or less), checks the chunk's digest, tells the store's guard
and fsyncs once before the answer: a 1 MiB PATCH makes one hop, not two.

Without a checksum an interrupted request keeps the pieces written whole
(fsync'd, on a worker thread like every fsync here).  With a checksum, a
mismatch or a cut cuts the data file back, so the offset is unchanged; the
guard (``chunk_guard.py``) makes sure a crash never leaves an unverified byte
counted either.  Every cut or keep first waits for the hand-over in flight, so
no late write lands after it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from functools import partial
from typing import BinaryIO

from aiohttp import StreamReader

from cloud_ingest.errors import ChecksumMismatch, PayloadTooLarge
from cloud_ingest.tus.core import PatchPlan
from cloud_ingest.tus.headers import Checksum
from cloud_ingest.tus.pending import PendingChunk
from cloud_ingest.tus.settle import settle
from cloud_ingest.tus.store import UploadStore

__all__ = ["receive_body"]

HAND_OVER = 1 << 20  # bytes of a body handed to the worker thread at a time


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


class _BodyWriter:
    """Writes a PATCH body's pieces at their offsets and hashes them on a worker thread,
    in order, while the event loop reads on: pieces are handed over ``HAND_OVER``
    bytes at a time (fewer thread hops), one hand-over in flight."""

    def __init__(self, fd: int, start: int, digests: list[hashlib._Hash]) -> None:
        self._fd = fd
        self._digests = digests
        self.handed = start  # offset after the last byte received (handed over or held)
        self.written = start  # offset after the last piece written and hashed
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._job: asyncio.Future[None] | None = None
        self._idle = threading.Event()
        self._idle.set()

    async def write(self, piece: bytes, *, last: bool = False) -> None:
        """Take ``piece``; hand the pieces held over once they reach ``HAND_OVER`` bytes
        and the previous hand-over is written (raising its error).  The ``last``
        piece of a body stays held: the final step writes it."""
        self._held.append(piece)
        self._held_bytes += len(piece)
        self.handed += len(piece)
        if self._held_bytes >= HAND_OVER and not last:
            await self._hand_over()

    async def finish(self) -> None:
        """Write what is held and wait for it (raising its error)."""
        if self._held:
            await self._hand_over()
        await self._wait()

    async def wait_in_flight(self) -> None:
        """Wait for the hand-over in flight (raising its error); what is still held is
        left to :meth:`write_held` on the final worker-thread step."""
        await self._wait()

    async def _hand_over(self) -> None:
        await self._wait()
        pieces, position = self._held, self.handed - self._held_bytes
        self._held, self._held_bytes = [], 0
        self._idle.clear()
        job = asyncio.ensure_future(asyncio.to_thread(self._write, pieces, position))
        job.add_done_callback(_retrieved)
        self._job = job

    async def _wait(self) -> None:
        """Wait for the hand-over in flight.  A cancelled wait leaves it to be written
        (shielded: one still queued for a thread is never dropped, so
        :meth:`wait_idle` always returns)."""
        job, self._job = self._job, None
        if job is not None:
            await asyncio.shield(job)

    def _write(self, pieces: list[bytes], position: int) -> None:
        try:
            for piece in pieces:
                view = memoryview(piece)
                end = position + len(view)
                while view:
                    n = os.pwrite(self._fd, view, position)
                    view, position = view[n:], position + n
                for digest in self._digests:
                    digest.update(piece)
                self.written = end
        finally:
            self._idle.set()

    def wait_idle(self) -> None:
        """Block until no piece is being written (on a worker thread, before a cut or keep)."""
        self._idle.wait()

    def write_held(self) -> None:
        """Write the pieces still held, once idle (on a worker thread; a cut body
        without a checksum keeps every byte that arrived)."""
        self.wait_idle()
        pieces, position = self._held, self.handed - self._held_bytes
        self._held, self._held_bytes = [], 0
        self._idle.clear()
        self._write(pieces, position)


def _retrieved(job: asyncio.Future[None]) -> None:
    if not job.cancelled():
        job.exception()


def _cut_back_after(
    writer: _BodyWriter,
    store: UploadStore,
    upload_id: str,
    f: BinaryIO,
    start: int,
    chunk: PendingChunk | None,
) -> None:
    """:func:`_cut_back` once the hand-over in flight is written (no late write after it)."""
    writer.wait_idle()
    _cut_back(store, upload_id, f, start, chunk)


def _keep_written(writer: _BodyWriter, store: UploadStore, upload_id: str, f: BinaryIO) -> None:
    """A cut body without a checksum: keep what arrived (a piece whose write failed
    is dropped from its start)."""
    try:
        writer.write_held()
    except OSError:
        pass  # what was written whole is kept below
    try:
        f.truncate(writer.written)
    except BaseException:
        f.close()
        raise
    _keep(store, upload_id, f, writer.written, None)


def _write_rest_and_keep(
    writer: _BodyWriter,
    store: UploadStore,
    upload_id: str,
    f: BinaryIO,
    chunk: PendingChunk | None,
    chunk_hash: hashlib._Hash | None,
) -> int:
    """The body is complete: write the pieces still held, then :func:`_verify_and_keep`
    (one worker-thread step); returns the new offset.  A failed write is a cut:
    back to the chunk's start with a checksum, else what was written is kept."""
    try:
        writer.write_held()
    except BaseException:
        if chunk is not None:
            _cut_back(store, upload_id, f, chunk.start, chunk)
        else:
            _keep_written(writer, store, upload_id, f)
        raise
    _verify_and_keep(store, upload_id, f, writer.written, chunk, chunk_hash)
    return writer.written


def _verify_and_keep(
    store: UploadStore,
    upload_id: str,
    f: BinaryIO,
    end: int,
    chunk: PendingChunk | None,
    chunk_hash: hashlib._Hash | None,
) -> None:
    """Keep the body (the bytes below ``end``) if it passes the chunk's checksum (on a
    worker thread): a mismatch cuts it back and raises :class:`ChecksumMismatch`
    (460), else the guard is told and one fsync makes all of it durable."""
    if chunk is not None and (chunk_hash is None or chunk_hash.digest() != chunk.digest):
        _cut_back(store, upload_id, f, chunk.start, chunk)
        raise ChecksumMismatch(f"{chunk.algorithm} of the chunk does not match")
    _keep(store, upload_id, f, end, chunk)


async def _next_piece(content: StreamReader) -> bytes:
    """The next buffer of the body as it arrived (no join: no copy); b"" at its end.
    (``readchunk`` also answers b"" at the end of each HTTP chunk of a chunked body.)"""
    while True:
        piece, _ = await content.readchunk()
        if piece or content.at_eof():
            return piece


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
    chunk_hash = hashlib.new(chunk.algorithm) if chunk is not None and chunk.algorithm else None
    writer = _BodyWriter(f.fileno(), plan.offset, [h for h in (chunk_hash, whole) if h is not None])
    too_large = False
    try:
        while piece := await _next_piece(content):
            received = writer.handed - plan.offset + len(piece)
            if received > plan.limit:
                too_large = True
                break
            await writer.write(piece, last=received == content_length)
        await writer.wait_in_flight()
    except BaseException:
        # a cut: keep what arrived, unless it cannot be verified
        if chunk is not None:
            await settle(partial(_cut_back_after, writer, store, upload_id, f, plan.offset, chunk))
        else:
            await settle(partial(_keep_written, writer, store, upload_id, f))
            if whole is not None:
                store.digests.advance(upload_id, writer.written, whole)
        raise
    if too_large:
        await asyncio.to_thread(_cut_back_after, writer, store, upload_id, f, plan.offset, chunk)
        raise PayloadTooLarge("the body passes the end of the upload")
    offset = await asyncio.to_thread(
        _write_rest_and_keep, writer, store, upload_id, f, chunk, chunk_hash
    )
    if whole is not None:
        store.digests.advance(upload_id, offset, whole)
    return offset
