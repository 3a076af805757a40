"""The signed manifest of a bundle: what it is for and every file with its sha256.

Pure (no I/O).  The envelope, signatures, time floor and release counter are
those of the one signed-artifact verifier (``sync.shared.signing``), so model
releases and image bundles are checked by the same code in the same order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from image_build.errors import BundleRefused
from image_build.platforms import Platform
from sync.shared.signing import (
    Envelope,
    FileDigest,
    Keyring,
    SignedHeader,
    TimeFloor,
    UnsafeArchive,
    VerificationError,
    safe_member_path,
    verify_document,
)

__all__ = [
    "BUNDLE_TYPE",
    "MANIFEST_MEMBER",
    "MEMBER_DIRS",
    "BundleManifest",
    "verify_manifest",
]

BUNDLE_TYPE = "image-bundle"
SUBJECT = "yardlink-appliance"  # the name the counter and time floor are kept under
MANIFEST_MEMBER = "manifest.json"  # first member of the tar: read and verified before the rest
# every file of a bundle lives in one of these directories (its kind)
MEMBER_DIRS = ("wheels", "models", "systemd", "config", "keys", "ca")


@dataclass(frozen=True)
class BundleManifest:
    """The signed fields of a bundle, read only from a verified envelope."""

    version: str  # the appliance's version (its wheel)
    platform: Platform
    python: str
    requirement: str  # what pip installs from the wheelhouse, e.g. "yardlink==0.1.0"
    files: Mapping[str, FileDigest]
    header: SignedHeader

    @staticmethod
    def signed_document(
        *,
        version: str,
        platform: Platform,
        python: str,
        files: Mapping[str, FileDigest],
        counter: int,
        issued_at: int,
        expires_at: int,
        rollback: bool,
    ) -> dict[str, Any]:
        for name in files:
            _check_member_name(name)
        return {
            "_type": BUNDLE_TYPE,
            "name": SUBJECT,
            "version": version,
            "platform": platform.value,
            "python": python,
            "requirement": f"yardlink=={version}",
            "counter": counter,
            "issued_at": issued_at,
            "expires_at": expires_at,
            "rollback": rollback,
            "files": {
                name: {"size": digest.size, "sha256": digest.sha256}
                for name, digest in sorted(files.items())
            },
        }

    @classmethod
    def from_signed(cls, signed: Mapping[str, Any], header: SignedHeader) -> BundleManifest:
        try:
            platform = Platform(str(signed.get("platform")))
        except ValueError:
            detail = f"unknown platform {signed.get('platform')!r}"
            raise BundleRefused("manifest", detail) from None
        raw_files = signed.get("files")
        if not isinstance(raw_files, dict) or not raw_files:
            raise BundleRefused("manifest", "files must be a non-empty object")
        files: dict[str, FileDigest] = {}
        for name, entry in raw_files.items():
            _check_member_name(name)
            if not isinstance(entry, dict):
                raise BundleRefused("manifest", f"{name}: an entry is {{size, sha256}}")
            size, sha = entry.get("size"), entry.get("sha256")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BundleRefused("manifest", f"{name}: size must be a non-negative integer")
            if not isinstance(sha, str) or len(sha) != 64:
                raise BundleRefused("manifest", f"{name}: sha256 must be 64 hex digits")
            files[name] = FileDigest(size, sha)
        fields = {key: signed.get(key) for key in ("version", "python", "requirement")}
        if not all(isinstance(value, str) and value for value in fields.values()):
            raise BundleRefused("manifest", "version, python and requirement must be strings")
        return cls(
            version=str(fields["version"]),
            platform=platform,
            python=str(fields["python"]),
            requirement=str(fields["requirement"]),
            files=files,
            header=header,
        )

    def names(self, kind: str) -> list[str]:
        """The files of one kind (``wheels``, ``models``, ...), sorted."""
        return sorted(name for name in self.files if name.split("/", 1)[0] == kind)


def verify_manifest(
    envelope_bytes: bytes,
    keyring: Keyring,
    floor: TimeFloor,
    *,
    active_counter: int | None,
    platform: Platform,
) -> tuple[BundleManifest, Envelope]:
    """Trust in the verifier's order (key and signature, type, expiry and freshness
    against the signed-time floor, counter unless a signed rollback), then the
    bundle's own checks (platform).  Raises ``BundleRefused`` naming the check."""
    try:
        envelope = Envelope.parse(envelope_bytes)
        header, _keyid = verify_document(
            envelope,
            keyring,
            floor,
            expected_type=BUNDLE_TYPE,
            subject_field="name",
            active_counter=active_counter,
        )
    except VerificationError as exc:
        raise BundleRefused(exc.check, str(exc)) from exc
    manifest = BundleManifest.from_signed(envelope.signed, header)
    if manifest.platform is not platform:
        raise BundleRefused(
            "platform",
            f"this bundle is for {manifest.platform.value}, this gateway is {platform.value}",
        )
    return manifest, envelope


def _check_member_name(name: str) -> None:
    try:
        path = safe_member_path(name)
    except UnsafeArchive as exc:
        raise BundleRefused("member_path", str(exc)) from exc
    if path.as_posix() != name or len(path.parts) != 2 or path.parts[0] not in MEMBER_DIRS:
        raise BundleRefused("member_path", f"{name!r} is not <{'|'.join(MEMBER_DIRS)}>/<file name>")
    if PurePosixPath(name).name.startswith("."):
        raise BundleRefused("member_path", f"{name!r} is a hidden file")
