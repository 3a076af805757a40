"""tus chunk data in an object store, so that any instance can take the next PATCH.

Each PATCH body that is kept becomes one object ``tus-parts/<upload>/<start>``
(``start`` zero-padded, so key order is byte order).  The body is spooled to a
local temp file while it arrives, checked against its ``Upload-Checksum``, and
only then stored (one atomic write): an unverified chunk is never visible, so
no chunk guard is needed here.  A body cut without a checksum keeps what
arrived, as the file store does.

With shared state (``state``, PostgreSQL: fleet mode) a part is named
``<start>-<lease generation>`` and counts only once committed into the
upload's row under the writer's lease (``state_postgres.py``: fencing), so a
stalled writer's late part never replaces or joins another writer's bytes;
the offset and the part list are read from the row, with no LIST per request.
Without it (one instance) the offset is the end of the run of parts that
starts at 0 (a listing).

On completion :meth:`ObjectChunks.assemble_blob` concatenates the parts into
the blob while hashing them (the blob appears only when its sha256 matches),
then the parts go.  Who may write an upload at a time (its lock) is not decided
here: the routes hold the upload's lock around every call.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from aiohttp import StreamReader

from cloud_ingest.blobs import BlobStore
from cloud_ingest.errors import ChecksumMismatch, PayloadTooLarge
from cloud_ingest.object_store import ObjectInfo, ObjectStore
from cloud_ingest.tus.core import PatchPlan
from cloud_ingest.tus.fencing import Lease, LeaseLost, PartRow, held_lease, seen_row
from cloud_ingest.tus.headers import Checksum
from cloud_ingest.tus.settle import settle

if TYPE_CHECKING:  # asyncpg is imported only by a service with a shared catalog
    from cloud_ingest.tus.state_postgres import PostgresUploadState

__all__ = ["PARTS", "ObjectChunks"]

PARTS = "tus-parts"
_READ_SIZE = 256 * 1024
_START_DIGITS = 20


class ObjectChunks:
    """The bytes of uploads in progress as part objects in ``store``; temp files in
    ``spool``; with ``state`` the committed parts are those of the upload's row."""

    def __init__(
        self, store: ObjectStore, spool: Path, state: PostgresUploadState | None = None
    ) -> None:
        self.store = store
        self.spool = spool
        self.state = state
        spool.mkdir(parents=True, exist_ok=True)

    def part_key(self, upload_id: str, start: int, lease: Lease | None = None) -> str:
        key = f"{PARTS}/{upload_id}/{start:0{_START_DIGITS}d}"
        if self.state is None:
            return key
        return f"{key}-{lease.generation if lease is not None else 0}"

    def _row(self, upload_id: str) -> PartRow | None:
        """The upload's committed parts: as this request last saw them, else asked."""
        assert self.state is not None
        seen, row = seen_row(upload_id)
        return row if seen else self.state.call_from_thread(self.state.parts(upload_id))

    def create(self, upload_id: str) -> None:
        """Mark the upload as holding data (an empty part 0, replaced by the first body);
        with shared state the new row says so."""
        if self.state is None:
            self.store.put(self.part_key(upload_id, 0), b"")

    def part_keys(self, upload_id: str) -> list[str]:
        """The keys of the parts that make up the upload's first bytes, in order."""
        if self.state is not None:
            row = self._row(upload_id)
            return list(row.keys) if row is not None else []
        return [info.key for info in self._listed_run(upload_id)]

    def _listed_run(self, upload_id: str) -> list[ObjectInfo]:
        """The listed parts that run from byte 0 without gaps (one instance)."""
        run: list[ObjectInfo] = []
        end = 0
        for info in self.store.list(f"{PARTS}/{upload_id}"):
            start = int(info.key.rsplit("/", 1)[1])
            if start == end and info.size > 0:
                run.append(info)
                end += info.size
            elif start > end:
                break  # a gap: bytes after it are not counted (cannot happen under the lock)
        return run

    def offset(self, upload_id: str) -> int:
        if self.state is not None:
            row = self._row(upload_id)
            return row.offset if row is not None else 0
        return sum(info.size for info in self._listed_run(upload_id))

    def has_data(self, upload_id: str) -> bool:
        if self.state is not None:
            row = self._row(upload_id)
            return row is not None and not row.assembled
        return bool(self.store.list(f"{PARTS}/{upload_id}"))

    def delete(self, upload_id: str) -> None:
        """Remove every part object of the upload (committed or not: a listing)."""
        for info in self.store.list(f"{PARTS}/{upload_id}"):
            self.store.delete(info.key)

    def assemble_blob(self, upload_id: str, blobs: BlobStore, sha256: str) -> None:
        """Concatenate the parts into blob ``sha256`` (checked), then drop the parts.

        :class:`ChecksumMismatch` when the bytes do not hash to ``sha256``.
        """
        if not blobs.has(sha256):
            blobs.assemble(self.part_keys(upload_id), sha256)
        if self.state is not None:
            self.state.call_from_thread(self.state.mark_assembled(upload_id))
        self.delete(upload_id)

    async def receive(
        self,
        upload_id: str,
        content: StreamReader,
        plan: PatchPlan,
        checksum: Checksum | None,
    ) -> int:
        """Take one PATCH body at ``plan.offset``; return the new offset."""
        lease = held_lease() if self.state is not None else None  # the fencing token
        fd, name = tempfile.mkstemp(prefix=f"{upload_id}.", suffix=".chunk", dir=self.spool)
        spooled = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                written = await self._spool(upload_id, content, plan, checksum, f, spooled, lease)
            if written:
                await settle(lambda: self._store_part(upload_id, plan, spooled, lease))
            return plan.offset + written
        finally:
            await asyncio.to_thread(spooled.unlink, missing_ok=True)

    async def _spool(
        self,
        upload_id: str,
        content: StreamReader,
        plan: PatchPlan,
        checksum: Checksum | None,
        f: BinaryIO,
        spooled: Path,
        lease: Lease | None,
    ) -> int:
        """Copy the body to ``f``, checking its size and checksum; the bytes to keep."""
        chunk_hash = hashlib.new(checksum.algorithm) if checksum is not None else None
        written = 0
        try:
            while piece := await content.read(_READ_SIZE):
                written += len(piece)
                if written > plan.limit:
                    break
                f.write(piece)
                if chunk_hash is not None:
                    chunk_hash.update(piece)
        except BaseException:
            if checksum is None and written:  # a cut without a checksum keeps its bytes
                f.close()
                await settle(lambda: self._store_part(upload_id, plan, spooled, lease))
            raise
        if written > plan.limit:
            raise PayloadTooLarge("the body passes the end of the upload")
        if (
            checksum is not None
            and chunk_hash is not None
            and chunk_hash.digest() != checksum.digest
        ):
            raise ChecksumMismatch(f"{checksum.algorithm} of the chunk does not match")
        return written

    def _store_part(
        self, upload_id: str, plan: PatchPlan, spooled: Path, lease: Lease | None
    ) -> None:
        """Store the spooled body as a part; with shared state commit it under ``lease``
        (:class:`LeaseLost` and the object removed when the lease was lost)."""
        key = self.part_key(upload_id, plan.offset, lease)
        size = spooled.stat().st_size
        self.store.put_file(key, spooled)
        if self.state is None:
            return
        try:
            self.state.call_from_thread(
                self.state.commit_part(upload_id, lease, plan.offset, size, key)
            )
        except LeaseLost:  # refused, never counted: a late writer's part is dropped
            self.store.delete(key)
            raise
