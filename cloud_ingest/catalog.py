"""The catalog interface: what the service remembers, independent of the database.

:class:`Catalog` is a Protocol so that a PostgreSQL implementation can serve a
multi-instance deployment later; :class:`cloud_ingest.catalog_sqlite.SqliteCatalog`
is the default (aiosqlite, WAL).  Records are plain frozen dataclasses.

Times are seconds since the epoch (UTC) as floats, passed in by the caller so
that tests and sweeps control the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from cloud_ingest.principal import Principal
from sync.protocol import Stream

__all__ = [
    "RAW_REQUEST_STATES",
    "AuditEvent",
    "BatchRecord",
    "Catalog",
    "DeviceRecord",
    "RawRequestRecord",
    "RawRequestState",
    "UploadRecord",
]

RawRequestState = Literal["requested", "delivered", "expired", "unavailable"]
RAW_REQUEST_STATES: tuple[RawRequestState, ...] = (
    "requested",
    "delivered",
    "expired",
    "unavailable",
)


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    device_id: str
    site_id: str
    created_at: float
    revoked_at: float | None = None
    last_sync_at: float | None = None
    last_sync: dict[str, Any] | None = None  # the last SyncRequest body (depth, models, link)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class BatchRecord:
    batch_id: str
    device_id: str
    site_id: str
    stream: Stream
    first_seq: int
    last_seq: int
    records: int
    sha256: str
    size: int
    lake_paths: tuple[str, ...]  # relative to the lake root
    received_at: float


@dataclass(frozen=True, slots=True)
class RawRequestRecord:
    request_id: str
    device_id: str
    created_by: str
    created_at: float
    expires_at: float
    state: RawRequestState = "requested"
    seq: int | None = None
    since: float | None = None
    until: float | None = None
    reason: str | None = None
    state_changed_at: float | None = None
    upload_id: str | None = None


@dataclass(frozen=True, slots=True)
class UploadRecord:
    upload_id: str
    device_id: str
    length: int
    sha256: str | None
    completed_at: float
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    event_id: int
    at: float
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]


class Catalog(Protocol):
    """Everything the ingest service keeps outside the lake and the blob store."""

    async def close(self) -> None: ...

    # devices and credentials.  Every change below is written in one transaction
    # with its audit event: both are kept, or (an error, a kill) neither.
    async def add_device(
        self, device_id: str, site_id: str, token_hash: str, now: float, *, actor: str
    ) -> None:
        """Register a device with its first credential, audited ``device.add`` by ``actor``;
        Conflict, writing nothing, if it exists."""
        ...

    async def revoke_device(self, device_id: str, now: float, *, actor: str) -> None:
        """Revoke the device and all its credentials, audited ``device.revoke`` by ``actor``;
        NotFound, writing nothing, if unknown."""
        ...

    async def add_operator(self, name: str, token_hash: str, now: float, *, actor: str) -> None:
        """Create an operator with its credential, audited ``operator.add`` by ``actor``;
        Conflict, writing nothing, if it exists."""
        ...

    async def revoke_operator(self, name: str, now: float, *, actor: str) -> None:
        """Revoke an operator and its credentials, audited ``operator.revoke`` by ``actor``;
        NotFound, writing nothing, if unknown."""
        ...

    async def rotate_device_token(
        self, device_id: str, token_hash: str, now: float, *, actor: str
    ) -> None:
        """Revoke the device's live credentials and give it ``token_hash`` instead, audited
        ``device.rotate`` by ``actor``; NotFound if unknown, Conflict if revoked."""
        ...

    async def record_audit(
        self, now: float, actor: str, action: str, subject: str, detail: dict[str, Any]
    ) -> None:
        """An audit event for an operator's read (a listing), in a transaction of its own."""
        ...

    async def principal_for_token(self, token_hash: str) -> Principal | None:
        """The principal of a live credential, or None (unknown or revoked)."""
        ...

    async def get_device(self, device_id: str) -> DeviceRecord | None: ...

    async def list_devices(self) -> list[DeviceRecord]: ...

    async def record_sync(self, device_id: str, status: dict[str, Any], now: float) -> None: ...

    # batches and watermarks
    async def get_batch(self, batch_id: str) -> BatchRecord | None: ...

    async def record_batch(self, batch: BatchRecord) -> BatchRecord:
        """Store the batch and raise its stream's watermark, atomically.

        Returns the stored record: ``batch`` itself, or the one already held
        under that id (the caller compares digests).
        """
        ...

    async def watermarks(self, device_id: str) -> dict[Stream, int]: ...

    async def held_ranges(
        self, device_id: str, stream: Stream, above: int, limit: int
    ) -> list[tuple[int, int]]:
        """(first_seq, last_seq) of the device's batches of ``stream`` ending above seq
        ``above``, oldest first, at most ``limit``."""
        ...

    async def overlapping_batch(
        self, device_id: str, stream: Stream, first_seq: int, last_seq: int
    ) -> str | None:
        """The id of a held batch of this device and stream with a seq in the range, if any."""
        ...

    # raw requests
    async def add_raw_request(self, request: RawRequestRecord) -> None:
        """Store a new raw request, audited ``raw_request.create`` by its ``created_by``;
        Conflict, writing nothing, if its id exists."""
        ...

    async def get_raw_request(self, request_id: str) -> RawRequestRecord | None: ...

    async def list_raw_requests(
        self, *, device_id: str | None, state: RawRequestState | None, limit: int
    ) -> list[RawRequestRecord]: ...

    async def pending_raw_requests(self, device_id: str, now: float) -> list[RawRequestRecord]: ...

    async def set_raw_request_state(
        self,
        device_id: str,
        request_ids: list[str],
        state: RawRequestState,
        now: float,
        upload_id: str | None = None,
    ) -> int:
        """Move the device's *requested* requests to ``state``; returns how many moved."""
        ...

    async def expire_raw_requests(self, now: float) -> int: ...

    # uploads and blobs
    async def record_upload(self, upload: UploadRecord, *, actor: str) -> bool:
        """Record a completed upload once, all in one transaction.

        Its row; the blob it produced, when it named a sha256; the raw request
        its metadata ``request_id`` answers (when the device's and still
        requested) moved to delivered; an ``upload.complete`` audit event by
        ``actor``.  False, writing nothing, when it was recorded already (the
        completion re-run after a crash), so nothing is recorded twice.
        """
        ...

    async def has_blob(self, sha256: str) -> bool: ...

    async def device_uploaded_blob(self, device_id: str, sha256: str) -> bool:
        """Whether ``device_id`` itself completed an upload of blob ``sha256``."""
        ...

    # audit: events are written only by the changes above, in their transaction
    async def list_audit(self, *, after_id: int, limit: int) -> list[AuditEvent]: ...
