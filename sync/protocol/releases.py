"""The signed model-release manifest: what a release is, for whom, and how it rolls out.

Written by ``yardlink models sign`` (operator's machine), stored and served by
the cloud registry (``GET /v1/models/{name}/{version}/manifest``), verified by
the appliance before anything of the release runs.  The manifest travels as the
``signed`` part of a ``sync.shared.signing.Envelope``; docs/OTA.md shows one.

Times are signed integers (unix seconds).  The device judges them only against
the highest signed time it has seen, never against its own clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from sync.shared.signing import (
    BadEnvelope,
    Envelope,
    FileDigest,
    Keyring,
    SignedHeader,
    SigningKey,
    TimeFloor,
    UnsafeArchive,
    WrongDeviceClass,
    safe_member_path,
    verify_document,
)

__all__ = [
    "MANIFEST_FORMAT",
    "RELEASE_TYPE",
    "ArtifactInfo",
    "ReleaseFile",
    "ReleaseManifest",
    "RolloutPlan",
    "VerifiedRelease",
    "sign_manifest",
    "verify_manifest",
]

RELEASE_TYPE: Final = "model-release"
MANIFEST_FORMAT: Final = 1
NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SITE_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
DEVICE_CLASS_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")

Name = Annotated[str, StringConstraints(pattern=NAME_RE.pattern)]
SiteId = Annotated[str, StringConstraints(pattern=SITE_RE.pattern)]
DeviceClass = Annotated[str, StringConstraints(pattern=DEVICE_CLASS_RE.pattern)]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ReleaseFile(_Strict):
    """One file inside the release archive."""

    path: str = Field(min_length=1, max_length=255)  # relative, '/'-separated
    sha256: Sha256Hex
    size: int = Field(ge=0)

    @model_validator(mode="after")
    def _relative(self) -> ReleaseFile:
        try:
            clean = safe_member_path(self.path).as_posix()
        except UnsafeArchive as exc:
            raise ValueError(str(exc)) from exc
        if clean != self.path:
            raise ValueError(f"file path {self.path!r} is not in normal form ({clean!r})")
        return self

    def digest(self) -> FileDigest:
        return FileDigest(size=self.size, sha256=self.sha256)


class ArtifactInfo(_Strict):
    """The release archive (an uncompressed tar) as a whole."""

    sha256: Sha256Hex
    size: int = Field(ge=1)

    def digest(self) -> FileDigest:
        return FileDigest(size=self.size, sha256=self.sha256)


class RolloutPlan(_Strict):
    """How the cloud rolls the release out; the device only carries it."""

    canary_sites: list[SiteId] = Field(default_factory=list, max_length=1000)
    stages: list[int] = Field(default_factory=lambda: [10, 50, 100], min_length=1, max_length=20)
    max_failure_pct: float = Field(default=2.0, ge=0, le=100)  # abort above this share
    min_devices: int = Field(default=3, ge=1)  # reports needed before the share counts
    bake_s: int = Field(default=3600, ge=0)  # hold each stage this long before the next

    @model_validator(mode="after")
    def _stages_climb_to_100(self) -> RolloutPlan:
        if any(not 0 < s <= 100 for s in self.stages):
            raise ValueError("rollout stages are percentages in 1..100")
        if any(b <= a for a, b in zip(self.stages, self.stages[1:], strict=False)):
            raise ValueError("rollout stages must increase")
        if self.stages[-1] != 100:
            raise ValueError("the last rollout stage must be 100")
        return self


class ReleaseManifest(_Strict):
    """The ``signed`` part of a model release's envelope."""

    type: Literal["model-release"] = Field(default=RELEASE_TYPE, alias="_type")
    format: Literal[1] = MANIFEST_FORMAT
    name: Name  # the model's name (a subject: counter and freshness are kept per name)
    version: str = Field(min_length=1, max_length=64, pattern=NAME_RE.pattern)
    counter: int = Field(ge=1)  # monotonically increasing per name
    rollback: bool = False  # a signed rollback may carry a counter not above the active one
    task: str = Field(min_length=1, max_length=64)  # the pipeline task it serves
    runtime: Literal["onnxruntime", "litert"]
    device_classes: list[DeviceClass] = Field(min_length=1, max_length=64)
    artifact: ArtifactInfo
    files: list[ReleaseFile] = Field(min_length=1, max_length=1000)
    rollout: RolloutPlan = Field(default_factory=RolloutPlan)
    issued_at: int = Field(ge=0)  # unix seconds, signed
    expires_at: int = Field(ge=0)
    notes: str = Field(default="", max_length=4096)  # release notes for operators

    @model_validator(mode="after")
    def _consistent(self) -> ReleaseManifest:
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError("a file is listed twice")
        return self

    def signed_document(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def file_digests(self) -> dict[str, FileDigest]:
        return {f.path: f.digest() for f in self.files}


@dataclass(frozen=True)
class VerifiedRelease:
    """A manifest that passed every check before its artifact is read."""

    manifest: ReleaseManifest
    keyid: str  # the trusted key that signed it
    envelope: Envelope

    def advanced_floor(self, floor: TimeFloor) -> TimeFloor:
        """The floor to store durably once this manifest is accepted."""
        return floor.advanced(SignedHeader.read(self.envelope.signed, subject_field="name"))


def sign_manifest(manifest: ReleaseManifest, keys: list[SigningKey]) -> Envelope:
    return Envelope.sign(manifest.signed_document(), keys)


def verify_manifest(
    data: bytes,
    keyring: Keyring,
    floor: TimeFloor,
    *,
    device_class: str,
    active_counter: int | None,
) -> VerifiedRelease:
    """Verify manifest bytes: envelope, trusted key and signature, type, expiry and
    freshness against ``floor``, counter (unless a signed rollback), shape, device class.
    Raises a ``VerificationError`` subclass naming the failed check."""
    envelope = Envelope.parse(data)
    _, keyid = verify_document(
        envelope,
        keyring,
        floor,
        expected_type=RELEASE_TYPE,
        subject_field="name",
        active_counter=active_counter,
    )
    try:
        manifest = ReleaseManifest.model_validate(envelope.signed)
    except ValidationError as exc:
        raise BadEnvelope(f"signed manifest is malformed: {_first_error(exc)}") from exc
    if device_class not in manifest.device_classes:
        raise WrongDeviceClass(
            f"{manifest.name} {manifest.version} targets {', '.join(manifest.device_classes)},"
            f" not this device's class {device_class}"
        )
    return VerifiedRelease(manifest=manifest, keyid=keyid, envelope=envelope)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "manifest"
    return f"{where}: {error['msg']} ({exc.error_count()} problem(s))"
