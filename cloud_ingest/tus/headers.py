"""Pure parsing of the tus 1.0.0 request headers (no I/O).

* ``Upload-Metadata``: comma separated ``key base64value`` pairs; the value may
  be absent (``key`` alone means an empty value).
* ``Upload-Checksum``: ``algo base64digest`` with algo ``sha1`` or ``sha256``.
* ``Upload-Offset`` / ``Upload-Length``: non-negative decimal integers.
* each of them at most once (:func:`single`): two values are ambiguous.

Every malformed value raises :class:`~cloud_ingest.errors.BadRequest`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from email.utils import formatdate

from multidict import MultiMapping

from cloud_ingest.errors import BadRequest

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "TUS_EXTENSIONS",
    "TUS_VERSION",
    "Checksum",
    "encode_metadata",
    "http_date",
    "parse_checksum",
    "parse_metadata",
    "parse_non_negative",
    "single",
]

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = (
    "creation,creation-with-upload,creation-defer-length,checksum,termination,expiration"
)
CHECKSUM_ALGORITHMS = ("sha1", "sha256")
_MAX_DIGITS = 19  # fits in a signed 64-bit integer


@dataclass(frozen=True, slots=True)
class Checksum:
    """A parsed ``Upload-Checksum``: the algorithm and the expected raw digest."""

    algorithm: str
    digest: bytes

    def new_hash(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)


def single(headers: MultiMapping[str], name: str) -> str | None:
    """The one value of header ``name``, None when absent; 400 when sent more than once."""
    values = headers.getall(name, [])
    if len(values) > 1:
        raise BadRequest(f"{name} was sent {len(values)} times; send it once")
    return values[0] if values else None


def parse_non_negative(name: str, value: str | None) -> int | None:
    """The integer in header ``name``, None when absent; 400 when malformed."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or not text.isascii() or len(text) > _MAX_DIGITS:
        raise BadRequest(f"{name} must be a non-negative integer, got {value[:40]!r}")
    return int(text)


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"invalid base64 {text[:40]!r}") from exc


def parse_metadata(value: str | None) -> dict[str, str]:
    """Decode ``Upload-Metadata`` into a dict of text values (UTF-8)."""
    if value is None or not value.strip():
        return {}
    result: dict[str, str] = {}
    for pair in value.split(","):
        parts = pair.strip().split(" ")
        if not parts[0] or len(parts) > 2 or not parts[0].isascii():
            raise BadRequest(f"malformed Upload-Metadata pair {pair[:60]!r}")
        key = parts[0]
        if key in result:
            raise BadRequest(f"duplicate Upload-Metadata key {key[:40]!r}")
        raw = _b64decode(parts[1]) if len(parts) == 2 else b""
        try:
            result[key] = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"Upload-Metadata value of {key[:40]!r} is not UTF-8") from exc
    return result


def encode_metadata(metadata: dict[str, str]) -> str:
    """The ``Upload-Metadata`` header value for ``metadata`` (echoed by HEAD)."""
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" if value else key
        for key, value in metadata.items()
    )


def parse_checksum(value: str | None) -> Checksum | None:
    """Parse ``Upload-Checksum``; 400 for an unknown algorithm or a bad digest."""
    if value is None:
        return None
    parts = value.strip().split(" ")
    if len(parts) != 2:
        raise BadRequest("Upload-Checksum must be '<algorithm> <base64 digest>'")
    algorithm, encoded = parts[0].lower(), parts[1]
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise BadRequest(f"unsupported checksum algorithm {algorithm[:20]!r}")
    digest = _b64decode(encoded)
    if len(digest) != hashlib.new(algorithm).digest_size:
        raise BadRequest(f"{algorithm} digest has the wrong length")
    return Checksum(algorithm, digest)


def http_date(epoch_s: float) -> str:
    """RFC 7231 date, as ``Upload-Expires`` wants it."""
    return formatdate(epoch_s, usegmt=True)
