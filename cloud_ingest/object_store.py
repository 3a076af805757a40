"""Where the lake, the blobs and in-progress tus chunks live: a small object-store interface.

Two implementations: :class:`LocalObjectStore` (a directory, the embedded
default: ``DATA_DIR/lake``, ``DATA_DIR/blobs`` ...) and
:class:`~cloud_ingest.object_store_s3.S3ObjectStore` (any S3-compatible store,
for many ingest instances).  Keys are relative POSIX paths (``lake/events/
site=a/date=2026-12-01/x.parquet``).  Every call is blocking (callers run it on
a worker thread) and every object appears whole or not at all: the local store
writes a hidden temp file, fsyncs and renames it; on S3 a PUT is atomic.

:func:`open_object_store` turns ``--store`` (``s3://bucket/prefix?endpoint=...``)
or the data directory into a store.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

import pyarrow.fs as pafs

from cloud_ingest.errors import ChecksumMismatch, IngestError
from sync.shared.durable_file import (
    TEMP_SUFFIX,
    fsync_directory,
    make_directory_durably,
    replace_durably,
)

__all__ = [
    "READ_PIECE",
    "ContentCheck",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectStore",
    "ObjectStoreUnavailable",
    "check_key",
]

READ_PIECE = 1 << 20
_KEY_PART = re.compile(r"[A-Za-z0-9_.=+@:,-]+")


class ObjectStoreUnavailable(IngestError):
    """The object store could not be reached or refused a request: try again later."""

    status, error, retryable = 503, "store_unavailable", True


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int


class ObjectStore(Protocol):
    """Whole objects under relative keys; blocking calls, atomic writes."""

    @property
    def url(self) -> str:
        """Where the store is, for logs and docs (never a secret)."""
        ...

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` as ``key`` (replacing it), whole or not at all, durably."""
        ...

    def put_file(self, key: str, source: Path) -> None:
        """Store the local file ``source`` as ``key`` and remove ``source``."""
        ...

    def concat(self, key: str, parts: Iterable[str], *, sha256: str | None = None) -> int:
        """Write the objects ``parts`` one after another as ``key``; returns its size.

        With ``sha256`` the bytes are hashed on the way and ``key`` appears only
        when they match (else :class:`ChecksumMismatch` and nothing is written).
        """
        ...

    def get(self, key: str) -> bytes:
        """The whole object; ``FileNotFoundError`` when there is none."""
        ...

    def iter_bytes(self, key: str, piece: int = READ_PIECE) -> Iterator[bytes]:
        """The object in pieces (hashing, streaming); ``FileNotFoundError`` when none."""
        ...

    def iter_range(
        self, key: str, start: int, length: int, piece: int = READ_PIECE
    ) -> Iterator[bytes]:
        """``length`` bytes of the object from ``start`` (a Range answer), in pieces;
        ``FileNotFoundError`` when none, fewer bytes when the object is shorter."""
        ...

    def size(self, key: str) -> int | None:
        """Size of ``key``, None when it does not exist."""
        ...

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object under ``prefix`` (a directory-like key), in key order."""
        ...

    def move(self, source: str, target: str) -> None:
        """Rename an object (a copy then a delete where the store has no rename)."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; no error when it is already gone."""
        ...

    def arrow_location(self, prefix: str) -> tuple[pafs.FileSystem, str]:
        """A pyarrow file system and path of ``prefix``, for ``pyarrow.dataset`` readers."""
        ...


class ContentCheck:
    """The sha256 of bytes streamed through, checked against an expected one (if any)."""

    def __init__(self, expected: str | None) -> None:
        self.expected = expected
        self._hash = hashlib.sha256() if expected is not None else None

    def update(self, piece: bytes) -> None:
        if self._hash is not None:
            self._hash.update(piece)

    def verify(self) -> None:
        if self._hash is not None and self._hash.hexdigest() != self.expected:
            raise ChecksumMismatch(
                f"content has sha256 {self._hash.hexdigest()}, metadata says {self.expected}"
            )


def check_key(key: str) -> str:
    """``key`` when it is a clean relative path (no ``..``, no empty part), else ValueError."""
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or _KEY_PART.fullmatch(p) is None for p in parts):
        raise ValueError(f"not an object key: {key[:120]!r}")
    return key


class LocalObjectStore:
    """Objects as files under ``root`` (the data directory), written crash-safely."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes) -> None:
        path = self.path(key)
        make_directory_durably(path.parent)
        replace_durably(path, data)

    def put_file(self, key: str, source: Path) -> None:
        path = self.path(key)
        make_directory_durably(path.parent)
        with source.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(source, path)
        fsync_directory(path.parent)

    def concat(self, key: str, parts: Iterable[str], *, sha256: str | None = None) -> int:
        path = self.path(key)
        make_directory_durably(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        digest = ContentCheck(sha256)
        try:
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    for piece in self.iter_bytes(part):
                        digest.update(piece)
                        out.write(piece)
                digest.verify()
                out.flush()
                os.fsync(out.fileno())
                size = out.tell()
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        fsync_directory(path.parent)
        return size

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def iter_bytes(self, key: str, piece: int = READ_PIECE) -> Iterator[bytes]:
        with self.path(key).open("rb") as f:
            while data := f.read(piece):
                yield data

    def iter_range(
        self, key: str, start: int, length: int, piece: int = READ_PIECE
    ) -> Iterator[bytes]:
        with self.path(key).open("rb") as f:
            f.seek(start)
            while length > 0 and (data := f.read(min(piece, length))):
                length -= len(data)
                yield data

    def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> list[ObjectInfo]:
        base = self.path(prefix)
        if not base.is_dir():
            return []
        found = []
        for path in base.rglob("*"):
            if path.is_file() and not path.name.endswith(TEMP_SUFFIX):
                relative = PurePosixPath(path.relative_to(self.root).as_posix())
                found.append(ObjectInfo(str(relative), path.stat().st_size))
        return sorted(found, key=lambda o: o.key)

    def move(self, source: str, target: str) -> None:
        target_path = self.path(target)
        make_directory_durably(target_path.parent)
        os.replace(self.path(source), target_path)
        fsync_directory(target_path.parent)
        if target_path.parent != self.path(source).parent:
            fsync_directory(self.path(source).parent)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def arrow_location(self, prefix: str) -> tuple[pafs.FileSystem, str]:
        return pafs.LocalFileSystem(), self.path(prefix).as_posix()
