"""Content-addressed blob store: ``<root>/<sha256[:2]>/<sha256>``.

A blob enters only through :meth:`BlobStore.adopt`, which hashes the source
file (streaming), then renames it into place and fsyncs the directory, so a
blob that is visible is complete and has the digest of its name.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from cloud_ingest.errors import BadRequest, ChecksumMismatch
from sync.shared.durable_file import fsync_directory, make_directory_durably

__all__ = ["BlobStore", "file_sha256", "is_sha256"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_READ_SIZE = 1 << 20


def is_sha256(text: str) -> bool:
    return _SHA256.fullmatch(text) is not None


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(_READ_SIZE):
            digest.update(piece)
    return digest.hexdigest()


class BlobStore:
    """Blobs named by their sha256, stored once."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise BadRequest(f"not a lowercase hex sha256: {sha256[:80]!r}")
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def adopt(self, src: Path, sha256: str, *, verified: bool = False) -> bool:
        """Move ``src`` into the store as blob ``sha256``.

        Hashes ``src`` first (skipped when the caller already did, ``verified``)
        and raises :class:`ChecksumMismatch` when it differs (``src`` is left
        alone).  Returns False when the blob was already held (``src`` is then
        removed), True when it was stored now.
        """
        target = self.path_for(sha256)
        if not verified:
            actual = file_sha256(src)
            if actual != sha256:
                raise ChecksumMismatch(f"content has sha256 {actual}, metadata says {sha256}")
        if target.is_file():
            src.unlink(missing_ok=True)
            return False
        make_directory_durably(target.parent)
        with src.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(src, target)
        fsync_directory(target.parent)
        return True
