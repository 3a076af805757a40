"""Content-addressed local blob store, AES-256-GCM at rest, one key per UTC day.

Layout::

    <root>/<YYYY-MM-DD>/<sha256 of the plaintext>.blob   nonce(12) + ciphertext+tag
    <keys_dir>/<YYYY-MM-DD>.key                           32 random bytes, 0600

A blob is addressed by the sha256 of its *plaintext* and the day it was
stored.  Deleting a day's key is crypto-shredding: every blob of that day
becomes unreadable (``BlobShredded``) even if a copy of the disk survives.
The retention sweep deletes keys and blob directories older than N days.
The sha256 is bound into the AES-GCM associated data so blobs cannot be
swapped between names.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from appliance.errors import ApplianceError
from sync.shared.durable_file import make_directory_durably, replace_durably

__all__ = [
    "BlobCorrupt",
    "BlobKeyDamaged",
    "BlobMissing",
    "BlobShredded",
    "BlobStore",
    "BlobWriteFailed",
    "StoredBlob",
    "utc_day",
    "write_atomically",
]

_NONCE = 12
_KEY_BYTES = 32
_TAG = 16


class BlobMissing(ApplianceError):
    """No blob with this sha256 on that day (never stored, or swept)."""


class BlobShredded(ApplianceError):
    """The day's key is gone: the blob was crypto-shredded and cannot be read."""


class BlobCorrupt(ApplianceError):
    """The ciphertext does not authenticate (disk damage or tampering)."""


class BlobKeyDamaged(ApplianceError):
    """The day's key file is not a 32-byte key (truncated or overwritten): that day's blobs
    cannot be read, and no new blob is stored under it.  Not retryable: restore the key file
    from a backup, or move it away to shred the day (a new key is then made)."""


class BlobWriteFailed(ApplianceError):
    """A blob or key could not be written (full disk, I/O error); nothing partial is left.
    Retryable once there is room."""

    retryable = True


@dataclass(frozen=True, slots=True)
class StoredBlob:
    sha256: str
    size: int
    day: str


def utc_day(when: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(when))


class BlobStore:
    """Synchronous and small; the daemon calls it through ``asyncio.to_thread``."""

    def __init__(self, root: Path, keys_dir: Path) -> None:
        self.root = root
        self.keys_dir = keys_dir
        make_directory_durably(root)
        make_directory_durably(keys_dir, mode=0o700)
        self._keys: dict[str, bytes] = {}
        self._key_lock = threading.Lock()  # one key per day, even with concurrent writers

    def _key(self, day: str, *, create: bool) -> bytes:
        with self._key_lock:
            return self._key_locked(day, create=create)

    def _key_locked(self, day: str, *, create: bool) -> bytes:
        cached = self._keys.get(day)
        if cached is not None:
            return cached
        path = self.keys_dir / f"{day}.key"
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            if not create:
                raise BlobShredded(
                    f"the key for {day} is deleted: that day's blobs are shredded"
                ) from None
            key = secrets.token_bytes(32)
            write_atomically(path, key, f"the key for {day}")
        if len(key) != _KEY_BYTES:
            raise BlobKeyDamaged(
                f"{path}: {len(key)} bytes, not a {_KEY_BYTES}-byte key; the blobs of {day} "
                "cannot be read or stored: restore the file, or move it away to shred the day"
            )
        self._keys[day] = key
        return key

    def put(self, data: bytes, when: float | None = None) -> StoredBlob:
        """Encrypt and store ``data`` under its sha256 for the UTC day of ``when``."""
        day = utc_day(time.time() if when is None else when)
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.root / day / f"{sha256}.blob"
        if not path.exists():
            nonce = secrets.token_bytes(_NONCE)
            sealed = nonce + AESGCM(self._key(day, create=True)).encrypt(
                nonce, data, sha256.encode()
            )
            write_atomically(path, sealed, f"blob {sha256[:12]}... of {day}")
        return StoredBlob(sha256=sha256, size=len(data), day=day)

    def find_day(self, sha256: str) -> str | None:
        for day_dir in sorted(self.root.iterdir(), reverse=True):
            if (day_dir / f"{sha256}.blob").exists():
                return day_dir.name
        return None

    def get(self, sha256: str, day: str | None = None) -> bytes:
        """Decrypt a blob; ``BlobMissing`` / ``BlobShredded`` / ``BlobCorrupt`` say why not."""
        day = day or self.find_day(sha256)
        path = self.root / (day or "-") / f"{sha256}.blob"
        if day is None or not path.exists():
            raise BlobMissing(f"no blob {sha256[:12]}... in the store")
        key = self._key(day, create=False)
        sealed = path.read_bytes()
        if len(sealed) < _NONCE + _TAG:
            raise BlobCorrupt(f"blob {sha256[:12]}... of {day} is truncated ({len(sealed)} bytes)")
        try:
            data = AESGCM(key).decrypt(sealed[:_NONCE], sealed[_NONCE:], sha256.encode())
        except InvalidTag:
            raise BlobCorrupt(f"blob {sha256[:12]}... of {day} does not authenticate") from None
        return data

    def shred_day(self, day: str) -> None:
        """Delete the day's key (crypto-shred), then its ciphertexts."""
        with self._key_lock:
            self._keys.pop(day, None)
            (self.keys_dir / f"{day}.key").unlink(missing_ok=True)
        shutil.rmtree(self.root / day, ignore_errors=True)

    def sweep(self, retention_days: int, now: float | None = None) -> list[str]:
        """Shred every day older than ``retention_days``; returns the days shredded."""
        cutoff = utc_day((time.time() if now is None else now) - retention_days * 86400)
        days = {p.stem for p in self.keys_dir.glob("*.key")} | {
            p.name for p in self.root.iterdir() if p.is_dir()
        }
        shredded = sorted(day for day in days if day < cutoff)
        for day in shredded:
            self.shred_day(day)
        return shredded

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*.blob"))


def write_atomically(path: Path, data: bytes, what: str) -> None:
    """Write ``data`` to ``path`` whole or not at all (``replace_durably``); on failure
    nothing is left behind and ``BlobWriteFailed`` is raised."""
    try:
        replace_durably(path, data)
    except OSError as exc:
        raise BlobWriteFailed(f"cannot store {what}: {exc.strerror or exc}") from exc
