"""Plate tokens: HMAC-SHA256 of the normalised plate under a per-site key.

The same plate gives the same token at one site (so visits can be joined),
different tokens at different sites, and the clear text is never written
anywhere.  Normalisation drops spaces and case, so "AB12 CDE" and "ab12cde"
are one plate.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import stat
from pathlib import Path

from pydantic import SecretStr

from appliance.errors import ConfigError
from appliance.privacy.blobstore import BlobWriteFailed, write_atomically

__all__ = ["PlateTokenizer", "load_plate_key", "normalise_plate"]

_KEEP = re.compile(r"[^0-9A-Z]")
TOKEN_PREFIX = "pt1:"


def normalise_plate(plate: str) -> str:
    return _KEEP.sub("", plate.upper())


class PlateTokenizer:
    """``token(plate)`` -> ``"pt1:" + 32 hex chars`` (128 bits of HMAC-SHA256)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ConfigError("plate HMAC key must be at least 16 bytes")
        self._key = key

    def token(self, plate: str) -> str:
        digest = hmac.new(self._key, normalise_plate(plate).encode(), hashlib.sha256).hexdigest()
        return TOKEN_PREFIX + digest[:32]


def load_plate_key(secret: SecretStr | None, key_file: Path) -> bytes:
    """The site key: the inline secret if given, else ``key_file`` (created, 0600, if missing)."""
    if secret is not None:
        return secret.get_secret_value().encode()
    try:
        key = key_file.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        try:  # whole or absent after a crash or a full disk: never a short key
            write_atomically(key_file, key, "the plate key")
        except BlobWriteFailed as exc:
            raise ConfigError(f"{key_file}: cannot create the plate key: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{key_file}: cannot read the plate key: {exc}") from None
    if len(key) < 16:
        raise ConfigError(f"{key_file}: plate key shorter than 16 bytes")
    mode = stat.S_IMODE(key_file.stat().st_mode)
    if mode & 0o077:  # anyone who reads it can reverse the plate tokens of this site
        raise ConfigError(
            f"{key_file}: mode {mode:04o} lets other users read the plate key;"
            f" run: chmod 600 {key_file}"
        )
    return key
