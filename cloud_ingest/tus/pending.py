"""The pending-chunk record ``<id>.pending``: what a crash may have left unverified.

A checksummed PATCH writes its bytes straight into the upload's data file, so
before the first byte it records durably where the chunk starts, how long it
is and its checksum.  The record has a fixed size and is overwritten in place
(``pwrite`` + ``fdatasync`` of one block: no new inode, no directory change,
no journal commit), and a chunk that passed its check leaves its record
behind rather than paying for a durable delete.  On start
(:func:`cut_back_to`) a record whose chunk is on disk whole and matches its
checksum changes nothing; anything else is cut back to the chunk's start.

Only a refused or cut chunk must clear the record durably, since other bytes
(maybe without a checksum) will be written over its start.  A record that
does not parse can only be a write torn by a crash: either an arming write
(no byte of the new chunk was written yet) or a clearing write (the cut-back
was already durable), so it keeps the data file as it is.

No I/O here: encoding, decoding and the recovery decision.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CLEARED", "RECORD_SIZE", "PendingChunk", "cut_back_to", "decode_record"]

RECORD_SIZE = 256
_MAGIC = "chunk1"
CLEARED = b"none".ljust(RECORD_SIZE - 1) + b"\n"


@dataclass(frozen=True, slots=True)
class PendingChunk:
    """A checksummed chunk being written at ``start``.

    ``length`` is None when the request had no Content-Length (the record
    cannot be checked then, and a success must clear it durably).
    ``algorithm``/``digest`` are None only for the older record format, which
    held the start offset alone.
    """

    start: int
    length: int | None
    algorithm: str | None = None
    digest: bytes | None = None

    def encode(self) -> bytes:
        length = "-" if self.length is None else str(self.length)
        digest = self.digest.hex() if self.digest is not None else "-"
        body = f"{_MAGIC} {self.start} {length} {self.algorithm or '-'} {digest}".encode()
        raw = body + f" {zlib.crc32(body):08x}".encode()
        if len(raw) >= RECORD_SIZE:
            raise ValueError("pending record too long")
        return raw.ljust(RECORD_SIZE - 1) + b"\n"

    def verifiable(self) -> bool:
        return self.length is not None and self.algorithm is not None and self.digest is not None


def decode_record(raw: bytes) -> PendingChunk | None:
    """The chunk a record describes; None for a cleared, empty or torn record.

    A record ends with the CRC-32 of its fields, so a write torn between an
    old and a new record never reads as a third one.
    """
    try:
        fields = raw.decode("ascii").split()
    except UnicodeDecodeError:
        return None
    if len(fields) == 1 and fields[0].isdigit():  # the older format: the start alone
        return PendingChunk(start=int(fields[0]), length=None)
    if len(fields) != 6 or fields[0] != _MAGIC:
        return None
    if f"{zlib.crc32(' '.join(fields[:5]).encode()):08x}" != fields[5]:
        return None  # torn or mixed: see the module doc
    _, start, length, algorithm, digest, _ = fields
    if not start.isdigit() or not (length.isdigit() or length == "-"):
        return None
    if algorithm not in hashlib.algorithms_available:
        return None
    try:
        raw_digest = bytes.fromhex(digest)
    except ValueError:
        return None
    return PendingChunk(
        start=int(start),
        length=None if length == "-" else int(length),
        algorithm=algorithm,
        digest=raw_digest,
    )


def cut_back_to(
    chunk: PendingChunk | None,
    size: int,
    range_digest: Callable[[int, int, str], bytes],
) -> int | None:
    """The size to cut the data file back to after a restart, None to keep it.

    ``range_digest(start, length, algorithm)`` hashes that range of the data
    file; it is called only when the whole chunk is on disk.
    """
    if chunk is None or size <= chunk.start:
        return None
    if (
        chunk.verifiable()
        and chunk.length is not None
        and chunk.algorithm is not None
        and size >= chunk.start + chunk.length
        and range_digest(chunk.start, chunk.length, chunk.algorithm) == chunk.digest
    ):
        return None
    return chunk.start
