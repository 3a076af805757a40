"""Which spool files are stored: the outbox's receipts, keyed by the file's identity.

A spool frame's ``events`` records are appended with a receipt naming its file as
read: camera, name, inode, size and modification time (``spool_receipt``).  The
outbox writes the receipt in the same WriteBatch as the records, so after any
crash (``kill -9``, power cut) the receipt is there exactly when the records are.
Before running the models on a file the spool asks the outbox for its receipt:
held, the frame was stored, only its move to ``processed/`` is left.  A file the
camera writes again under the same name has another identity: a new frame, read as
usual.  The receipt is dropped once the file is moved (or gone); one left by a crash
between the move and the drop is dropped at the next start (``stale_receipts``).

The identity leaves out the device number, which may change across reboots.  What it
cannot tell apart: a new file under the same name that got the old one's inode,
size and nanosecond mtime (it would be taken for stored and moved unread).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final, Protocol

__all__ = [
    "RECEIPT_PREFIX",
    "FileIdentity",
    "SpoolReceipts",
    "file_identity",
    "parse_spool_receipt",
    "spool_receipt",
    "stale_receipts",
]

RECEIPT_PREFIX: Final = b"spool/"

FileIdentity = tuple[int, int, int]
"""``(inode, size, mtime_ns)``: the same across restarts (a device number may not be)."""


class SpoolReceipts(Protocol):
    """What the spool needs of the outbox (``sync.outbox.Outbox``): its receipts."""

    def receipt(self, key: bytes) -> int | None: ...

    def receipts(self, prefix: bytes) -> dict[bytes, int]: ...

    async def drop_receipt(self, key: bytes) -> None: ...


def file_identity(info: os.stat_result) -> FileIdentity:
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def spool_receipt(camera: str, name: str, identity: FileIdentity) -> bytes:
    """``spool/<camera>/<name>\\0<inode>:<size>:<mtime_ns>`` (a name never holds a NUL;
    ``os.fsencode`` keeps a name that is not utf-8 as its bytes)."""
    ino, size, mtime_ns = identity
    return b"%s%s/%s\0%d:%d:%d" % (
        RECEIPT_PREFIX,
        camera.encode(),
        os.fsencode(name),
        ino,
        size,
        mtime_ns,
    )


def parse_spool_receipt(key: bytes) -> tuple[str, str, FileIdentity] | None:
    """``(camera, name, identity)`` of a key ``spool_receipt`` made; None for another."""
    if not key.startswith(RECEIPT_PREFIX):
        return None
    where, _, identity = key[len(RECEIPT_PREFIX) :].rpartition(b"\0")
    camera, _, name = where.partition(b"/")
    try:
        ino, size, mtime_ns = (int(part) for part in identity.split(b":"))
        return camera.decode(), os.fsdecode(name), (ino, size, mtime_ns)
    except ValueError:
        return None


def stale_receipts(root: Path, keys: Iterable[bytes]) -> list[bytes]:
    """The receipts among ``keys`` whose file is no longer in the spool as it was read
    (moved, removed or written anew): left by a crash after the move (blocking: stats)."""
    stale = []
    for key in keys:
        parsed = parse_spool_receipt(key)
        if parsed is None:
            stale.append(key)  # under the spool's prefix but not one of its keys
            continue
        camera, name, identity = parsed
        try:
            current = file_identity((root / camera / name).stat())
        except OSError:
            current = None
        if current != identity:
            stale.append(key)
    return stale
