"""Typed errors of the sync package.  The class tells the caller whether to retry.

``retryable`` is True when the same call may succeed later unchanged (a full
outbox that drains, a link that comes back); False when the input or the state
must change first.  ``user_facing`` errors are printed as one line by the CLI.
"""

from __future__ import annotations

__all__ = [
    "BatchConflict",
    "BatchOverlap",
    "BlobCopyDamaged",
    "CloudRejected",
    "CloudUnavailable",
    "CloudUnreachable",
    "MissingCloudSettings",
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
    "StateFileError",
    "SyncError",
]


class SyncError(Exception):
    """Root of every error raised by the sync package.

    ``unanswered``: the request behind it got no answer at all (the link or the host
    is down: probe for it rather than back off).  An error raised ``from`` another
    passes it on with ``unanswered=cause.unanswered``."""

    retryable: bool = False
    user_facing: bool = True
    unanswered: bool = False

    def __init__(self, *args: object, unanswered: bool | None = None) -> None:
        super().__init__(*args)
        if unanswered is not None:
            self.unanswered = unanswered


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


class BlobCopyDamaged(PermanentUploadError):
    """The device's copy of a blob no longer hashes to the sha256 it is stored under,
    checked twice (after the cloud's 410, then again before a new upload): every
    upload of it would be refused, so do not send it again."""


class StateFileError(RetryableSyncError):
    """The sync state file could not be written (full disk, I/O error); the previous
    one is kept.  Retry once space is freed: the state in memory is still current."""


class CloudUnavailable(RetryableSyncError):
    """The service could not be reached or failed on its side (retry after a backoff)."""


class CloudUnreachable(CloudUnavailable):
    """No HTTP answer at all (refused, reset, timed out): the link or the host is down.

    The engine probes for the link's return (``LinkMonitor.probe_wait_s``) rather
    than backing off as it does after an answer saying the service is in trouble
    (5xx, 429, 423)."""

    unanswered = True


class CloudRejected(PermanentSyncError):
    """The service refused the request (4xx); sending it unchanged will not help."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"HTTP {status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail


class BatchConflict(CloudRejected):
    """409 on ``PUT /v1/batches/{id}``: the cloud holds this id with a different digest."""


class BatchOverlap(CloudRejected):
    """412 on ``PUT /v1/batches/{id}``: the cloud holds some of these seqs under another id.

    Nothing was stored; the handshake's watermark says what the cloud holds.
    """


class MissingCloudSettings(PermanentSyncError, ValueError):
    """The settings name no cloud to talk to (``cloud_url`` or ``token`` unset)."""
