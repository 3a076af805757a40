"""Typed errors of the cloud ingest service, each mapped to one HTTP status.

Handlers raise these; one middleware turns them into ``{"error", "detail"}``
JSON bodies.  Nothing else may reach the client as a 500 with a traceback.
"""

from __future__ import annotations

__all__ = [
    "BadBatchId",
    "BadContentEncoding",
    "BadRequest",
    "BatchTooLargeDecoded",
    "CatalogUnavailable",
    "CatalogUnreachable",
    "CatalogVersionError",
    "ChecksumMismatch",
    "Conflict",
    "Forbidden",
    "Gone",
    "IngestError",
    "Locked",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "Unauthorized",
    "UnsupportedMediaType",
    "UploadSha256Mismatch",
]


class IngestError(Exception):
    """Root of every error raised by cloud_ingest; ``status`` is the HTTP answer."""

    status: int = 500
    error: str = "internal_error"
    retryable: bool = False
    user_facing: bool = True

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class BadRequest(IngestError):
    status, error = 400, "bad_request"


class BadBatchId(BadRequest):
    """A batch id that is not the one canonical ``DEVICE.STREAM.FIRST-LAST`` of its
    records (leading zeros, a seq beyond a signed 64-bit integer)."""

    error = "bad_batch_id"


class BadContentEncoding(BadRequest):
    """A body whose ``Content-Encoding`` (gzip, deflate, br) does not decode."""

    error = "bad_content_encoding"


class Unauthorized(IngestError):
    status, error = 401, "unauthorized"


class Forbidden(IngestError):
    status, error = 403, "forbidden"


class NotFound(IngestError):
    status, error = 404, "not_found"


class Conflict(IngestError):
    status, error = 409, "conflict"


class Gone(IngestError):
    status, error = 410, "gone"


class PreconditionFailed(IngestError):
    status, error = 412, "precondition_failed"


class PayloadTooLarge(IngestError):
    status, error = 413, "payload_too_large"


class BatchTooLargeDecoded(PayloadTooLarge):
    """A batch body within the byte limit that would decode to more than
    ``max_decoded_batch_bytes`` (a compression or dictionary bomb): split it."""

    error = "batch_too_large_decoded"


class UnsupportedMediaType(IngestError):
    status, error = 415, "unsupported_media_type"


class Locked(IngestError):
    status, error, retryable = 423, "locked", True


class ChecksumMismatch(IngestError):
    """A tus chunk that does not match its ``Upload-Checksum``: the upload is kept at
    its offset, send the chunk again (460)."""

    status, error, retryable = 460, "checksum_mismatch", True


class UploadSha256Mismatch(Gone):
    """A finished tus upload whose bytes do not hash to its ``Upload-Metadata`` sha256.

    The upload has been deleted, so resending its last chunk cannot help: 410 Gone
    is tus's "this upload is no more, start a new one" (a 460 would say the upload
    is kept and only the chunk must be sent again).
    """

    error, retryable = "upload_sha256_mismatch", True


class CatalogVersionError(IngestError):
    """The catalog file was written by a newer yardlink; refuse to touch it."""

    status, error = 500, "catalog_version"


class CatalogUnavailable(IngestError):
    """The catalog file cannot be opened (not an SQLite database, unreadable, no room)."""

    status, error = 500, "catalog_unavailable"


class CatalogUnreachable(IngestError):
    """The shared (PostgreSQL) catalog cannot be reached now: down, restarting, the network."""

    status, error, retryable = 503, "catalog_unreachable", True
