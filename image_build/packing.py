"""Byte-reproducible ``.tar.zst``: the same inputs give the same bytes on any machine.

Members in a fixed order (the manifest first, then the files sorted by name),
regular files only, owner 0:0 with empty names, mode 0644, mtime
SOURCE_DATE_EPOCH, POSIX ustar headers; one zstd frame at a fixed level,
single-threaded (the multi-threaded encoder cuts the input differently), with a
checksum so that a flipped bit is refused.  ``zstandard`` is pinned in the
runtime dependencies: its bundled libzstd decides the compressed bytes (so the
pin is what makes a rebuild identical), and the installer on the gateway needs
it to read the bundle.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import zstandard

__all__ = ["ZSTD_LEVEL", "MemberSource", "pack"]

ZSTD_LEVEL = 10  # wheels are already deflated: a higher level buys little and costs minutes
_FILE_MODE = 0o644
_CHUNK = 1 << 20

MemberSource = tuple[str, Path | bytes]  # name in the archive, file or bytes


def _header(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = _FILE_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def pack(out: BinaryIO, members: Iterable[MemberSource], *, mtime: int) -> None:
    """Write ``members`` in the given order as one zstd-compressed tar to ``out``."""
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True, threads=0)
    with (
        compressor.stream_writer(out, closefd=False) as zstd_out,
        tarfile.open(fileobj=zstd_out, mode="w|", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for name, source in members:
            if isinstance(source, bytes):
                tar.addfile(_header(name, len(source), mtime), io.BytesIO(source))
            else:
                with source.open("rb") as handle:
                    size = source.stat().st_size
                    tar.addfile(_header(name, size, mtime), handle)
