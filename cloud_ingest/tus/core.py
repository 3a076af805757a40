"""The pure upload state machine: what a tus request may do to an upload.

No I/O here: :class:`UploadInfo` is the persisted state of one upload and the
functions decide (or refuse with a typed error) what a request does with it.
The file store (``store.py``) and the routes (``routes.py``) do the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from cloud_ingest.errors import BadRequest, Conflict, NotFound, PayloadTooLarge

__all__ = ["PatchPlan", "UploadInfo", "plan_creation", "plan_patch"]


@dataclass(frozen=True, slots=True)
class UploadInfo:
    """One upload: owner, declared length (None while deferred), metadata, expiry.

    The offset is not part of the persisted info: it is the number of bytes on
    disk, so a crash can never make the two disagree.
    """

    upload_id: str
    device_id: str
    length: int | None
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    expires_at: float = 0.0
    completed: bool = False
    notified: bool = False  # on_complete returned (re-run after a crash before it did)

    def to_json(self) -> dict[str, Any]:
        return {
            "upload_id": self.upload_id,
            "device_id": self.device_id,
            "length": self.length,
            "metadata": self.metadata,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "completed": self.completed,
            "notified": self.notified,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UploadInfo:
        return cls(
            upload_id=str(data["upload_id"]),
            device_id=str(data["device_id"]),
            length=None if data["length"] is None else int(data["length"]),
            metadata={str(k): str(v) for k, v in dict(data["metadata"]).items()},
            created_at=float(data["created_at"]),
            expires_at=float(data["expires_at"]),
            completed=bool(data.get("completed", False)),
            notified=bool(data.get("notified", False)),
        )

    def is_expired(self, now: float) -> bool:
        return not self.completed and now >= self.expires_at

    def with_length(self, length: int) -> UploadInfo:
        return replace(self, length=length)


def plan_creation(length: int | None, defer_length: str | None, max_size: int) -> int | None:
    """The declared length of a new upload (None when deferred), or a 400/413."""
    if length is None:
        if defer_length is None:
            raise BadRequest("Upload-Length or Upload-Defer-Length: 1 is required")
        if defer_length.strip() != "1":
            raise BadRequest("Upload-Defer-Length must be 1")
        return None
    if defer_length is not None:
        raise BadRequest("Upload-Length and Upload-Defer-Length are exclusive")
    if length > max_size:
        raise PayloadTooLarge(f"Upload-Length {length} exceeds Tus-Max-Size {max_size}")
    return length


@dataclass(frozen=True, slots=True)
class PatchPlan:
    """What one PATCH may write: at most ``limit`` bytes starting at ``offset``."""

    offset: int
    limit: int
    new_length: int | None  # a deferred length the PATCH declares now


def plan_patch(
    info: UploadInfo,
    current_offset: int,
    *,
    claimed_offset: int | None,
    content_length: int | None,
    upload_length: int | None,
    max_size: int,
) -> PatchPlan:
    """Check a PATCH against the upload's state; return how much it may write."""
    if claimed_offset is None:
        raise BadRequest("Upload-Offset is required")
    if info.completed:
        raise Conflict(f"upload {info.upload_id} is already complete")
    if claimed_offset != current_offset:
        raise Conflict(f"Upload-Offset {claimed_offset} does not match offset {current_offset}")
    new_length = None
    length = info.length
    if upload_length is not None:
        if length is not None and upload_length != length:
            raise BadRequest("Upload-Length may not change once set")
        if length is None:
            if upload_length < current_offset:
                raise BadRequest("Upload-Length is below the bytes already received")
            if upload_length > max_size:
                raise PayloadTooLarge(f"Upload-Length exceeds Tus-Max-Size {max_size}")
            new_length, length = upload_length, upload_length
    room = (length if length is not None else max_size) - current_offset
    if content_length is not None and content_length > room:
        raise PayloadTooLarge(f"{content_length} bytes would pass the end of the upload")
    return PatchPlan(offset=current_offset, limit=room, new_length=new_length)


def require_found(info: UploadInfo | None, upload_id: str, now: float) -> UploadInfo:
    """The upload, or 404 when unknown or expired."""
    if info is None or info.is_expired(now):
        raise NotFound(f"no upload {upload_id[:64]!r}")
    return info
