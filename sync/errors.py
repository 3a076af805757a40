"""Typed errors of the sync package.  The class tells the caller whether to retry.

``retryable`` is True when the same call may succeed later unchanged (a full
outbox that drains, a link that comes back); False when the input or the state
must change first.  ``user_facing`` errors are printed as one line by the CLI.
"""

from __future__ import annotations

__all__ = [
    "OutboxClosed",
    "OutboxCorrupted",
    "OutboxDiskFull",
    "OutboxFull",
    "OutboxStorageError",
    "PermanentSyncError",
    "PermanentUploadError",
    "ProtocolError",
    "RecordRejected",
    "RetryableSyncError",
    "RetryableUploadError",
    "SyncError",
]


class SyncError(Exception):
    """Root of every error raised by the sync package."""

    retryable: bool = False
    user_facing: bool = True


class RetryableSyncError(SyncError):
    """Try again later: the condition is expected to pass (link down, backpressure)."""

    retryable = True


class PermanentSyncError(SyncError):
    """Do not retry unchanged: the input or the state is wrong."""

    retryable = False


class RecordRejected(PermanentSyncError):
    """A record was refused at the door: wrong type, oversize, unknown class."""


class OutboxFull(RetryableSyncError):
    """Only never-evicted classes remain and the size cap is reached: backpressure."""


class OutboxDiskFull(OutboxFull):
    """The filesystem under the outbox is (nearly) full; stored records are intact.

    Retry once space is freed (records acknowledged by the cloud, old logs removed).
    """


class OutboxStorageError(RetryableSyncError):
    """The storage refused an operation (I/O error, database held by another process).

    Records already acknowledged as durable are not affected; the outbox reopens
    its database on the next write.
    """


class OutboxClosed(PermanentSyncError):
    """The outbox was closed; no further appends are accepted."""


class OutboxCorrupted(PermanentSyncError):
    """The database on disk cannot be opened; it is quarantined at start."""


class ProtocolError(PermanentSyncError):
    """A peer sent something that does not follow the wire protocol."""


class RetryableUploadError(RetryableSyncError):
    """An upload failed in a way that a resume will fix (cut, timeout, 5xx, 423)."""


class PermanentUploadError(PermanentSyncError):
    """An upload cannot succeed as is (403, 413, checksum of the whole file wrong)."""
