"""Wire protocol v1 between the appliance and the cloud ingest service.

This package is the contract: both sides import it (``cloud_ingest`` may import
nothing else of ``sync``).  It holds names, identifiers and the JSON bodies of
the handshake, as pydantic models; ``sync.protocol.parquet`` holds the Parquet
schema of each metadata stream and the batch codec (kept apart so that the
outbox and whatever else does not build batches never loads pyarrow).
docs/PROTOCOL.md explains it for people.

Streams
    A *stream* is one outbox class as seen by the cloud.  Metadata streams
    (``critical``, ``events``, ``telemetry``) travel as Parquet micro-batches
    (``PUT /v1/batches/{batch_id}``); raw streams (``raw_requested``,
    ``raw_sampled``) travel as blobs over tus (``/v1/uploads/``).

Sequence numbers
    ``seq`` is device-monotonic across all streams (one counter per device), so
    within a stream seqs increase but have gaps.  The cloud's *watermark* for a
    stream is the highest ``last_seq`` of a batch it has stored; batches of a
    stream are sent in seq order, so everything at or below the watermark is
    held.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "API_PREFIX",
    "BATCH_ID_RE",
    "DEVICE_ID_RE",
    "HELD_RANGES_MAX",
    "METADATA_STREAMS",
    "NO_OVERLAP_HEADER",
    "RAW_STREAMS",
    "SHA256_RE",
    "TUS_VERSION",
    "BatchAck",
    "BatchIdParts",
    "DepthInfo",
    "ErrorBody",
    "LinkStats",
    "ModelAssignment",
    "ModelInfo",
    "ModelOutcome",
    "RawRequest",
    "SamplingPolicy",
    "Stream",
    "SyncRequest",
    "SyncResponse",
    "UploadMetadata",
    "WireFormatError",
    "make_batch_id",
    "parse_batch_id",
]

API_PREFIX: Final = "/v1"
TUS_VERSION: Final = "1.0.0"
PROTOCOL_VERSION: Final = 1
BATCH_CONTENT_TYPE: Final = "application/vnd.apache.parquet"
# On a PUT of a batch: store it only if no batch held under another id shares a seq
# with its range (else 412), so a device may send before the handshake's answer.
NO_OVERLAP_HEADER: Final = "Yardlink-If-No-Overlap"
PARQUET_COMPRESSION: Final = "zstd"


class Stream(StrEnum):
    """Outbox classes, in priority order (first is sent first)."""

    CRITICAL = "critical"
    EVENTS = "events"
    TELEMETRY = "telemetry"
    RAW_REQUESTED = "raw_requested"
    RAW_SAMPLED = "raw_sampled"

    @property
    def priority(self) -> int:
        """0 is the highest priority."""
        return list(Stream).index(self)

    @property
    def is_metadata(self) -> bool:
        return self in METADATA_STREAMS


METADATA_STREAMS: Final = (Stream.CRITICAL, Stream.EVENTS, Stream.TELEMETRY)
RAW_STREAMS: Final = (Stream.RAW_REQUESTED, Stream.RAW_SAMPLED)

# Identifiers: safe in URLs and file names, no path separators, no dots at the start.
DEVICE_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
SITE_ID_RE: Final = DEVICE_ID_RE
SHA256_RE: Final = re.compile(r"^[0-9a-f]{64}$")
BATCH_ID_RE: Final = re.compile(
    r"^(?P<device>[A-Za-z0-9][A-Za-z0-9-]{0,63})\.(?P<stream>critical|events|telemetry)"
    r"\.(?P<first>[0-9]{1,20})-(?P<last>[0-9]{1,20})$"
)

DeviceId = Annotated[str, StringConstraints(pattern=DEVICE_ID_RE.pattern)]
# Seqs, counts and byte sizes: signed 64-bit on every side (Parquet int64, SQLite INTEGER)
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
Sha256Hex = Annotated[str, StringConstraints(pattern=SHA256_RE.pattern)]


class WireFormatError(ValueError):
    """Bytes or identifiers that do not follow this protocol (the reason is the message)."""


# --------------------------------------------------------------------------- batch ids


class BatchIdParts(BaseModel):
    model_config = ConfigDict(frozen=True)

    device_id: str
    stream: Stream
    first_seq: int
    last_seq: int


def make_batch_id(device_id: str, stream: Stream, first_seq: int, last_seq: int) -> str:
    """Deterministic id of a metadata batch: the same records always get the same id.

    >>> make_batch_id("gate-01", Stream.EVENTS, 5, 260)
    'gate-01.events.5-260'
    """
    if not DEVICE_ID_RE.fullmatch(device_id):  # not match: its $ lets a trailing "\n" in
        raise WireFormatError(f"invalid device id {device_id!r}")
    if not stream.is_metadata:
        raise WireFormatError(f"stream {stream} is not a metadata stream")
    if not 0 <= first_seq <= last_seq:
        raise WireFormatError(f"invalid seq range {first_seq}-{last_seq}")
    return f"{device_id}.{stream.value}.{first_seq}-{last_seq}"


def parse_batch_id(batch_id: str) -> BatchIdParts:
    match = BATCH_ID_RE.fullmatch(batch_id)
    if match is None:
        raise WireFormatError(
            f"invalid batch id {batch_id[:100]!r}: expected DEVICE.STREAM.FIRST-LAST"
        )
    first, last = int(match["first"]), int(match["last"])
    if first > last:
        raise WireFormatError(f"invalid batch id {batch_id!r}: first seq after last seq")
    return BatchIdParts(
        device_id=match["device"], stream=Stream(match["stream"]), first_seq=first, last_seq=last
    )


# --------------------------------------------------------------------------- JSON bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorBody(_Body):
    """Every 4xx/5xx answer of the ingest service."""

    error: str
    detail: str


class DepthInfo(_Body):
    records: Count
    bytes: Count
    oldest_age_s: float = Field(default=0.0, ge=0)


class ModelOutcome(_Body):
    """What a device last did with a model release (docs/OTA.md): the cloud's rollout
    counts these.  Sent in every handshake as state, so none needs an ack."""

    name: str = Field(min_length=1, max_length=128)  # release name
    version: str = Field(min_length=1, max_length=64)
    counter: int = Field(ge=0)
    result: Literal[
        "activated",  # switched to it, shadow window running
        "committed",  # passed the shadow window
        "refused",  # a verification check failed (``check`` names it)
        "validation_failed",  # golden outputs or latency budget (``check``)
        "rolled_back",  # shadow regression, technician, or told to by the cloud
    ]
    check: str | None = Field(default=None, max_length=64)
    reason: str | None = Field(default=None, max_length=500)


class ModelInfo(_Body):
    name: str = Field(min_length=1, max_length=128)
    version: str = Field(min_length=1, max_length=64)
    runtime: str | None = None
    healthy: bool = True
    # Model releases (docs/OTA.md); None when the pinned model of the image serves.
    task: str | None = Field(default=None, max_length=64)
    release: str | None = Field(default=None, max_length=128)  # the release name serving
    counter: int | None = Field(default=None, ge=0)
    outcome: ModelOutcome | None = None  # the latest update outcome for this task


class LinkStats(_Body):
    bandwidth_bps: float | None = Field(default=None, ge=0)
    rtt_ms: float | None = Field(default=None, ge=0)
    failures: Count = 0
    online_s: float | None = Field(default=None, ge=0)


class SyncRequest(_Body):
    """``POST /v1/sync``: what the device has and how it is."""

    protocol: int = PROTOCOL_VERSION
    device_id: DeviceId
    site_id: DeviceId
    watermarks: dict[Stream, Count] = Field(default_factory=dict)  # highest locally acked seq
    outbox: dict[Stream, DepthInfo] = Field(default_factory=dict)
    models: list[ModelInfo] = Field(default_factory=list, max_length=256)
    link: LinkStats = Field(default_factory=LinkStats)
    delivered_raw_requests: list[str] = Field(default_factory=list, max_length=10_000)
    unknown_raw_requests: list[str] = Field(default_factory=list, max_length=10_000)
    # Ask for ``SyncResponse.held`` (added later: a cloud older than the field answers 400,
    # so the cloud is upgraded before its devices; it sends ``held`` only when asked).
    want_held: bool = False


HELD_RANGES_MAX: Final = 1_000  # ranges per stream in one answer (the oldest first)
SeqRange = Annotated[tuple[int, int], Field(description="first and last seq of a batch")]


class RawRequest(_Body):
    """A raw frame the cloud asks for: by record (seq) or by time range."""

    request_id: str
    seq: int | None = None  # the event record whose raw frame is wanted
    since: float | None = None  # time range (seconds since the epoch, UTC)
    until: float | None = None
    expires_at: float | None = None


class SamplingPolicy(_Body):
    every_n_frames: int = Field(default=1000, ge=0)  # 0 disables periodic sampling
    max_per_hour: int = Field(default=60, ge=0)
    low_confidence_below: float = Field(default=0.5, ge=0, le=1)
    low_confidence_every_n: int = Field(default=50, ge=0)


class ModelAssignment(_Body):
    """A release the cloud wants this device to run (docs/OTA.md).  ``install``: fetch
    ``manifest_url`` and ``/v1/models/{name}/{version}/artifact`` and install it (it is
    verified on the device; nothing here is trusted).  ``rollback``: if the device runs
    ``name`` at ``counter``, go back to its previous, already verified release."""

    name: str
    version: str
    manifest_url: str
    counter: int | None = Field(default=None, ge=0)
    action: Literal["install", "rollback"] = "install"


class SyncResponse(_Body):
    """The cloud's answer: what it already holds, and what it wants."""

    protocol: int = PROTOCOL_VERSION
    acked: dict[Stream, int] = Field(default_factory=dict)  # cloud watermark per stream
    raw_requests: list[RawRequest] = Field(default_factory=list)
    sampling: SamplingPolicy = Field(default_factory=SamplingPolicy)
    models: list[ModelAssignment] = Field(default_factory=list)
    server_time: float | None = None
    # When asked (``want_held``): per metadata stream, the seq ranges of the batches the
    # cloud holds above the device's ``watermarks``, oldest first, at most
    # HELD_RANGES_MAX.  The watermark alone is the highest seq held, not a prefix: a
    # batch may be held above one that never arrived (say after the device's database
    # was restored from an older copy), and delta sync must not ack the missing one.
    held: dict[Stream, list[SeqRange]] | None = None


class BatchAck(_Body):
    """Answer to ``PUT /v1/batches/{batch_id}`` (201 stored, 200 already held)."""

    batch_id: str
    stream: Stream
    records: int
    duplicate: bool
    acked: dict[Stream, int]


class UploadMetadata(_Body):
    """tus ``Upload-Metadata`` keys used for raw blobs (values are base64 on the wire)."""

    sha256: Sha256Hex
    stream: Stream
    filename: str | None = None
    content_type: str | None = None
    seq: int | None = None  # the event record this raw frame belongs to
    request_id: str | None = None  # set for raw_requested uploads
