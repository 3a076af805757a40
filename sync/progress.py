"""What the sync engine reports to the local API (``/v1/status``) and the TUI."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from sync.link import LinkState
from sync.protocol import Stream

__all__ = ["ClassProgress", "CurrentUpload", "SyncProgress"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassProgress(_Frozen):
    pending_records: int
    pending_bytes: int
    oldest_age_s: float
    sent_records: int  # since the engine started
    sent_bytes: int  # bytes on the wire since the engine started (resends included)
    sent_today_bytes: int  # this UTC day, for daily budgets (survives restarts)
    budget_left_bytes: int | None  # None: no daily budget
    stalled: str | None = None  # why this stream is held (409 conflict, bad record)
    # raw classes: records passed over until the next start (a refused upload, an
    # unreadable blob ref), and records settled unsent for good (a damaged copy)
    skipped_records: int = 0
    given_up_records: int = 0
    last_sent_at: float | None = None  # epoch seconds of the last delivery, this run


class CurrentUpload(_Frozen):
    sha256: str
    upload_path: str | None
    offset: int
    length: int
    rate_bps: float | None
    chunk_bytes: int  # size of the chunk in flight


class SyncProgress(_Frozen):
    running: bool
    paused: bool
    link: LinkState
    bandwidth_bps: float | None  # measured
    rtt_ms: float | None
    consecutive_failures: int
    bandwidth_cap_bps: float | None  # configured global cap
    classes: dict[Stream, ClassProgress]
    upload: CurrentUpload | None
    last_error: str | None
    last_handshake_at: float | None
    clock_skew_s: float | None = None  # this clock minus the cloud's at the last handshake
    unknown_raw_requests: int
    resent_bytes: int  # upload bytes sent more than once (after cuts)
    # failures met off the main path, each logged: encoding a batch ahead, PUTs left to
    # finish after a 412 (their batches are met again when sent)
    background_failures: int = 0
    raw_request_failures: int = 0  # cloud raw requests the blob source failed to resolve
