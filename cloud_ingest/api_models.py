"""JSON bodies of the operator (admin) API; the device-facing ones live in sync.protocol."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloud_ingest.catalog import AuditEvent, DeviceRecord, RawRequestRecord, RawRequestState
from sync.protocol import DeviceId, Stream

__all__ = [
    "AuditEventView",
    "AuditList",
    "DeviceCreate",
    "DeviceCreated",
    "DeviceList",
    "DeviceView",
    "OperatorCreated",
    "OperatorRevoked",
    "RawRequestCreate",
    "RawRequestList",
    "RawRequestView",
]

_MAX_TTL_S = 365 * 86400.0


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def _of_record(cls, record: object, **more: Any) -> Self:
        """The view of a catalog record: each field read from ``record`` by its name, but
        for those given in ``more`` (what the record does not hold)."""
        held = {name: getattr(record, name) for name in cls.model_fields if name not in more}
        return cls(**held, **more)


class RawRequestCreate(_Body):
    """Ask a device for raw frames: one record by ``seq``, or a time range."""

    device_id: DeviceId
    seq: int | None = Field(default=None, ge=0, le=2**63 - 1)
    since: float | None = Field(default=None, ge=0, le=1e11)
    until: float | None = Field(default=None, ge=0, le=1e11)
    reason: str | None = Field(default=None, max_length=500)
    ttl_s: float | None = Field(default=None, gt=0, le=_MAX_TTL_S)

    @model_validator(mode="after")
    def _one_selector(self) -> RawRequestCreate:
        by_range = self.since is not None or self.until is not None
        if (self.seq is None) == (not by_range):
            raise ValueError("give either seq, or since and until")
        if by_range:
            if self.since is None or self.until is None:
                raise ValueError("a time range needs both since and until")
            if self.since >= self.until:
                raise ValueError("since must be before until")
        return self


class RawRequestView(_Body):
    request_id: str
    device_id: str
    state: RawRequestState
    seq: int | None
    since: float | None
    until: float | None
    reason: str | None
    created_by: str
    created_at: float
    expires_at: float
    state_changed_at: float | None
    upload_id: str | None

    @classmethod
    def of(cls, record: RawRequestRecord) -> RawRequestView:
        return cls._of_record(record)


class RawRequestList(_Body):
    raw_requests: list[RawRequestView]


class DeviceCreate(_Body):
    device_id: DeviceId
    site_id: DeviceId


class DeviceCreated(_Body):
    """Shown once: the token is not stored in clear and cannot be shown again."""

    device_id: str
    site_id: str
    token: str


class OperatorCreated(_Body):
    """Shown once, like a device token."""

    name: str
    token: str


class OperatorRevoked(_Body):
    name: str
    revoked: bool


class DeviceView(_Body):
    device_id: str
    site_id: str
    created_at: float
    revoked: bool
    revoked_at: float | None
    last_sync_at: float | None
    last_sync: dict[str, Any] | None
    acked: dict[Stream, int]

    @classmethod
    def of(cls, record: DeviceRecord, acked: dict[Stream, int]) -> DeviceView:
        return cls._of_record(record, acked=acked)


class DeviceList(_Body):
    devices: list[DeviceView]


class AuditEventView(_Body):
    event_id: int
    at: float
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventView:
        return cls._of_record(event)


class AuditList(_Body):
    events: list[AuditEventView]
    next_after: int  # pass as ?after= to read on
