"""The bodies of the local API that no other model describes, for its OpenAPI document.

The handlers build these answers as plain dicts; ``appliance.openapi`` turns
these models into the document's schemas, and the generated-request tests check
every answer against them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sync.progress import SyncProgress

__all__ = [
    "AuditList",
    "AuditRecord",
    "BandwidthCap",
    "ErrorBody",
    "FrameAccepted",
    "Health",
    "InstallRequest",
    "InstallVerdict",
    "RefusedRelease",
    "RollbackRequest",
    "SyncView",
    "TrustedKeyring",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Body):
    """Every 4xx/5xx answer of the local API."""

    error: str = Field(description="stable machine-readable code")
    detail: str = Field(description="what went wrong and what to do, for people")


class FrameAccepted(_Body):
    accepted: bool
    camera: str
    queue_depth: int = Field(ge=0, description="frames queued for this camera")


class FrameStored(_Body):
    accepted: bool
    camera: str
    id: str = Field(description="the frame's spool file name: durable once answered")
    stored: str = Field(description="where the frame is durable: spool")
    spool_depth: int = Field(ge=0, description="pushed frames of the spool not yet read")


class Health(_Body):
    status: str = Field(description="ok | unavailable")
    ready: bool
    reason: str | None = Field(default=None, description="why not ready")


class SyncView(SyncProgress):
    """``GET /v1/sync`` and the sync actions: the engine's progress."""

    bandwidth_cap_until: float | None = Field(description="end of a temporary cap, epoch s")


class BandwidthCap(_Body):
    bps: float | None = Field(ge=1, description="bits per second; null: the configured cap")
    for_s: float | None = Field(
        default=None, ge=1, le=7 * 86400, description="temporary cap, seconds"
    )


class AuditRecord(BaseModel):
    seq: int
    at: float
    action: str
    actor: str
    detail: dict[str, Any]


class AuditList(_Body):
    records: list[AuditRecord]


class RefusedRelease(_Body):
    """422 of ``POST /v1/models/install``: the release failed a check before use."""

    error: str
    check: str = Field(description="which check refused it (signature, sha256, version...)")
    detail: str


class InstallRequest(BaseModel):
    archive: str = Field(description="path of the release archive on the appliance")
    manifest: str = Field(description="path of its signed manifest on the appliance")


class RollbackRequest(BaseModel):
    reason: str = Field(default="technician request", max_length=500)


class InstallVerdict(BaseModel):
    committed: bool
    reason: str


class TrustedKeyring(BaseModel):
    """``POST /v1/models/keyring``: the release keyring now trusted."""

    version: int
    keys: list[str]
    revoked: list[str]
