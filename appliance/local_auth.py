"""Who may use the local API: the technician's bearer token, checked without I/O.

* :func:`check_technician` reads an ``Authorization`` header value and says
  whether it carries the configured token.  The scheme name is
  case-insensitive (RFC 9110, 11.1): ``Bearer``, ``bearer`` and ``BEARER`` are
  the same; the token is compared in constant time.
* :func:`token_problem` says why a configured token is unfit (a placeholder
  copied from an example, too short, too uniform); the config refuses such a
  token at ``check-config`` and at start.
* :func:`make_token` makes a fit one (``yardlink appliance gen-token``).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
from enum import Enum

from pydantic import SecretStr

__all__ = [
    "AuthVerdict",
    "MAKE_TOKEN_HINT",
    "MIN_TOKEN_CHARS",
    "bearer_credentials",
    "check_technician",
    "is_loopback_host",
    "make_token",
    "token_problem",
]

MIN_TOKEN_CHARS = 32  # token_urlsafe(32) gives 43 characters, 256 random bits
MIN_DISTINCT_CHARS = 10  # a random 32-character token has about 25
MAKE_TOKEN_HINT = (
    "make one with `yardlink appliance gen-token --file /etc/yardlink/technician.token`"
    " (or: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
    " and set technician_token_file to that file"
)
# Words that only a copied example or a note-to-self puts in a token.
_PLACEHOLDER_WORDS = (
    "changeme",
    "replaceme",
    "placeholder",
    "example",
    "yourtoken",
    "password",
    "xxxxxx",
)
# RFC 9110 credentials: auth-scheme 1*SP token68 (one token, no inner spaces).
_CREDENTIALS = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) +([A-Za-z0-9._~+/-]+=*) *")


class AuthVerdict(Enum):
    ALLOWED = "allowed"  # the token matches, or none is configured
    MISSING = "missing"  # no bearer credentials: 401
    WRONG = "wrong"  # bearer credentials that are not the token: 403


def bearer_credentials(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value; None if it is not one."""
    if header is None:
        return None
    match = _CREDENTIALS.fullmatch(header.strip(" "))
    if match is None or match[1].lower() != "bearer":
        return None
    return match[2]


def check_technician(header: str | None, token: SecretStr | None) -> AuthVerdict:
    """May a request with this ``Authorization`` header use the local API?"""
    if token is None:
        return AuthVerdict.ALLOWED
    given = bearer_credentials(header)
    if given is None:
        return AuthVerdict.MISSING
    if hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        return AuthVerdict.ALLOWED
    return AuthVerdict.WRONG


def token_problem(token: str) -> str | None:
    """Why ``token`` is unfit to guard the local API, or None if it is fit."""
    folded = re.sub(r"[^a-z0-9]", "", token.lower())
    for word in _PLACEHOLDER_WORDS:
        if word in folded:
            return f"a placeholder (it contains {word!r})"
    if len(token) < MIN_TOKEN_CHARS:
        return f"too short ({len(token)} characters, at least {MIN_TOKEN_CHARS})"
    if len(set(token)) < MIN_DISTINCT_CHARS:
        return f"too uniform (fewer than {MIN_DISTINCT_CHARS} different characters)"
    if bearer_credentials(f"Bearer {token}") != token:
        return "not sendable as a bearer token (use letters, digits and -._~+/ only)"
    return None


def make_token() -> str:
    """A fresh technician token: 256 random bits, URL-safe base64 (43 characters)."""
    while True:  # a random token that spells a placeholder word is astronomically rare
        token = secrets.token_urlsafe(32)
        if token_problem(token) is None:
            return token


def is_loopback_host(host: str) -> bool:
    """True if binding ``host`` keeps the API on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name or "": may resolve to any interface
        return False
