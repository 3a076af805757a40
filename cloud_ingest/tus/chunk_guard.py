"""Keeping a checksummed chunk that never passed its check from being counted after a crash.

The offset of an upload is the size of its data file, and a checksummed chunk
is written straight into that file, so after a crash the store must know how
far the bytes were checked.  Two ways, chosen once per store
(:func:`choose_guard`):

* :class:`XattrGuard`, when the file system keeps user xattrs (ext4, XFS and
  btrfs do): the data file carries ``user.yardlink.tus.verified``, the
  offset below which every byte was checked or acknowledged.  A PATCH sets it
  to its new offset right before the fsync that makes its bytes durable, so
  that one fsync covers both, and the next checksummed chunk starts exactly
  there and needs no write of its own.  Only a checksummed chunk on an upload
  without the attribute at its start (its first one) pays an extra fsync to
  set it.  On start, a data file longer than its attribute is cut back to it.
  An upload that never had a checksummed chunk has no attribute and keeps
  every byte that reached the disk, as before; once it has one, a crash in
  the middle of a PATCH without a checksum also drops that PATCH's unanswered
  bytes (a cut connection without a crash still keeps them).
* :class:`MarkerGuard`, the fallback: a ``<id>.pending`` record of the chunk's
  start, length and checksum is made durable (its own fdatasync) before the
  chunk's first byte, and checked on start (``pending.py``).

Either way a chunk that was refused or cut is cut back (truncate + fsync) by
the caller before :meth:`ChunkGuard.settle`.  The slow methods (``arm``,
``settle``, ``recover_all``) belong on a worker thread.
"""

from __future__ import annotations

import errno
import hashlib
import os
from functools import partial
from pathlib import Path
from typing import BinaryIO, Protocol

from cloud_ingest.tus.pending import CLEARED, PendingChunk, cut_back_to, decode_record
from sync.shared.durable_file import fsync_directory

__all__ = ["VERIFIED_ATTR", "ChunkGuard", "MarkerGuard", "XattrGuard", "choose_guard"]

VERIFIED_ATTR = "user.yardlink.tus.verified"
_NO_XATTR = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EPERM})


class ChunkGuard(Protocol):
    """Where a crash may cut an upload back to, kept up to date by the PATCHes."""

    def ready_for(self, f: BinaryIO, start: int) -> bool:
        """True when a checksummed chunk at ``start`` needs no :meth:`arm` (no I/O)."""

    def arm(self, upload_id: str, f: BinaryIO, chunk: PendingChunk) -> None:
        """Make durable, before its first byte, that ``chunk`` is not checked yet."""

    def keep(self, f: BinaryIO, offset: int, *, checksummed: bool) -> None:
        """The bytes below ``offset`` are kept; the caller fsyncs ``f`` right after."""

    def settle(self, upload_id: str, chunk: PendingChunk, written: int | None) -> None:
        """After the data fsync: ``written`` bytes of ``chunk`` kept (None: cut back)."""

    def recover_all(self) -> None:
        """On start: cut every data file back to what was checked."""

    def forget(self, upload_id: str) -> None:
        """The upload is finished or deleted (nothing durable needed)."""


def _range_digest(f: BinaryIO, start: int, length: int, algorithm: str) -> bytes:
    """``algorithm`` digest of ``length`` bytes of ``f`` from ``start``."""
    digest = hashlib.new(algorithm)
    f.seek(start)
    while length > 0 and (piece := f.read(min(length, 1 << 20))):
        digest.update(piece)
        length -= len(piece)
    return digest.digest()


class MarkerGuard:
    """A ``<id>.pending`` record per checksummed chunk (see ``pending.py``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, upload_id: str) -> Path:
        return self.root / f"{upload_id}.pending"

    def ready_for(self, f: BinaryIO, start: int) -> bool:
        del f, start
        return False

    def arm(self, upload_id: str, f: BinaryIO, chunk: PendingChunk) -> None:
        del f
        fd = os.open(self.path(upload_id), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            new = os.fstat(fd).st_size == 0
            os.pwrite(fd, chunk.encode(), 0)
            if new:  # the file and its name must be durable too, once
                os.fsync(fd)
            else:  # same size, same block: only that block goes out
                os.fdatasync(fd)
        finally:
            os.close(fd)
        if new:
            fsync_directory(self.root)

    def keep(self, f: BinaryIO, offset: int, *, checksummed: bool) -> None:
        del f, offset, checksummed

    def settle(self, upload_id: str, chunk: PendingChunk, written: int | None) -> None:
        if written is not None and written == chunk.length:
            return  # the record vouches for the chunk: leave it, no write needed
        try:  # other bytes will go where the chunk started: clear the record durably
            fd = os.open(self.path(upload_id), os.O_WRONLY)
        except FileNotFoundError:
            return
        try:
            os.pwrite(fd, CLEARED, 0)
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def recover_all(self) -> None:
        for marker in self.root.glob("*.pending"):
            chunk = decode_record(marker.read_bytes())
            data = self.root / f"{marker.stem}.bin"
            if data.exists():
                with data.open("r+b") as f:
                    size = f.seek(0, os.SEEK_END)
                    cut = cut_back_to(chunk, size, partial(_range_digest, f))
                    if cut is not None:
                        f.truncate(cut)
                        os.fsync(f.fileno())
            marker.unlink(missing_ok=True)
            fsync_directory(self.root)

    def forget(self, upload_id: str) -> None:
        self.path(upload_id).unlink(missing_ok=True)


class XattrGuard:
    """The verified offset in an xattr of the data file (see the module doc)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._markers = MarkerGuard(root)  # records left by an older version

    @staticmethod
    def verified(f: BinaryIO) -> int | None:
        """The data file's verified offset, None when it has none."""
        try:
            return int(os.getxattr(f.fileno(), VERIFIED_ATTR))
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                return None
            raise
        except ValueError:
            return None

    def ready_for(self, f: BinaryIO, start: int) -> bool:
        return self.verified(f) == start

    def arm(self, upload_id: str, f: BinaryIO, chunk: PendingChunk) -> None:
        del upload_id
        os.setxattr(f.fileno(), VERIFIED_ATTR, str(chunk.start).encode())
        os.fsync(f.fileno())

    def keep(self, f: BinaryIO, offset: int, *, checksummed: bool) -> None:
        if checksummed or self.verified(f) is not None:
            os.setxattr(f.fileno(), VERIFIED_ATTR, str(offset).encode())

    def settle(self, upload_id: str, chunk: PendingChunk, written: int | None) -> None:
        del upload_id, chunk, written  # a cut-back chunk started at the verified offset

    def recover_all(self) -> None:
        self._markers.recover_all()
        for path in self.root.glob("*.bin"):
            with path.open("r+b") as f:
                verified = self.verified(f)
                if verified is not None and os.fstat(f.fileno()).st_size > verified:
                    f.truncate(verified)
                    os.fsync(f.fileno())

    def forget(self, upload_id: str) -> None:
        del upload_id  # the attribute goes with the file


def choose_guard(root: Path) -> ChunkGuard:
    """An :class:`XattrGuard` where ``root`` keeps user xattrs, else a :class:`MarkerGuard`."""
    probe = root / ".xattr-probe"
    try:
        with probe.open("wb") as f:
            os.setxattr(f.fileno(), VERIFIED_ATTR, b"0")
    except OSError as exc:
        if exc.errno not in _NO_XATTR:
            raise
        return MarkerGuard(root)
    finally:
        probe.unlink(missing_ok=True)
    return XattrGuard(root)
