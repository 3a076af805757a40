"""Content-addressed blob store: ``blobs/<sha256[:2]>/<sha256>`` in an object store.

A blob enters only through :meth:`BlobStore.adopt` (a local file: hashed while
streaming, then renamed or uploaded into place) or :meth:`BlobStore.assemble`
(the parts of a tus upload held in the object store, hashed while they are
concatenated): either way a blob that is visible is complete and has the
digest of its name.  The object store is the data directory by default
(``DATA_DIR/blobs/...``) or S3 (``--store``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

from cloud_ingest.errors import BadRequest, ChecksumMismatch
from cloud_ingest.object_store import LocalObjectStore, ObjectStore

__all__ = ["BLOBS", "BlobStore", "file_sha256", "is_sha256"]

BLOBS = "blobs"
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
    """Blobs named by their sha256, stored once.

    ``BlobStore(path)`` keeps them in the directory ``path`` (the embedded
    default); ``BlobStore(store)`` under ``blobs/`` of an object store.
    """

    def __init__(self, where: Path | ObjectStore) -> None:
        if isinstance(where, Path):
            self.store: ObjectStore = LocalObjectStore(where.parent)
            self.prefix = where.name
        else:
            self.store, self.prefix = where, BLOBS

    def key_for(self, sha256: str) -> str:
        if not is_sha256(sha256):
            raise BadRequest(f"not a lowercase hex sha256: {sha256[:80]!r}")
        return f"{self.prefix}/{sha256[:2]}/{sha256}"

    def path_for(self, sha256: str) -> Path:
        """The local file of a blob (a directory store only; TypeError on S3)."""
        if not isinstance(self.store, LocalObjectStore):
            raise TypeError(f"blobs in {self.store.url} have no local path")
        return self.store.path(self.key_for(sha256))

    def local_path(self, sha256: str) -> Path | None:
        """:meth:`path_for` on a directory store, None on any other."""
        return self.path_for(sha256) if isinstance(self.store, LocalObjectStore) else None

    def has(self, sha256: str) -> bool:
        return self.store.size(self.key_for(sha256)) is not None

    def read(self, sha256: str) -> bytes:
        """A blob's bytes (``FileNotFoundError`` when not held)."""
        return self.store.get(self.key_for(sha256))

    def adopt(self, src: Path, sha256: str, *, verified: bool = False) -> bool:
        """Move the local file ``src`` into the store as blob ``sha256``.

        Hashes ``src`` first (skipped when the caller already did, ``verified``)
        and raises :class:`ChecksumMismatch` when it differs (``src`` is left
        alone).  Returns False when the blob was already held (``src`` is then
        removed), True when it was stored now.
        """
        key = self.key_for(sha256)
        if not verified:
            actual = file_sha256(src)
            if actual != sha256:
                raise ChecksumMismatch(f"content has sha256 {actual}, metadata says {sha256}")
        if self.store.size(key) is not None:
            src.unlink(missing_ok=True)
            return False
        self.store.put_file(key, src)
        return True

    def assemble(self, parts: Sequence[str], sha256: str) -> bool:
        """Concatenate the object-store ``parts`` into blob ``sha256`` once they hash to it.

        :class:`ChecksumMismatch` when they do not (nothing is stored).  Returns
        False when the blob was already held, True when it was stored now; the
        parts are left to the caller either way.
        """
        key = self.key_for(sha256)
        if self.store.size(key) is not None:
            return False
        self.store.concat(key, parts, sha256=sha256)
        return True
