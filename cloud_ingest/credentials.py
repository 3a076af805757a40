"""Bearer tokens: generation, hashing and constant-time comparison.

A token is 32 random bytes (url-safe base64) behind a short role prefix so a
leaked token is recognisable in logs and secret scanners.  The catalog stores
only ``sha256(token)``: tokens are high-entropy, so a plain digest is enough
(no slow password hash needed), and the digest is the lookup key.  Looking a
digest up by index leaks nothing useful through timing: an attacker cannot
choose the digest's bytes, so learning a matching prefix of it does not bring
them closer to a token.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Literal

__all__ = ["MAX_TOKEN_CHARS", "TOKEN_PREFIXES", "hash_token", "new_token"]

Role = Literal["device", "operator"]

TOKEN_PREFIXES: dict[Role, str] = {"device": "yld_", "operator": "ylo_"}
MAX_TOKEN_CHARS = 256  # longer Authorization values are refused before hashing


def new_token(role: Role) -> str:
    """A fresh random token for ``role``; shown once, never stored in clear."""
    return TOKEN_PREFIXES[role] + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Hex sha256 of the token (what the catalog keeps)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
