"""The one signed-artifact verifier of yardlink (model releases and image bundles).

Public surface; the parts live in private modules:

- ``_envelope``: canonical JSON, the ``{signed, signatures}`` envelope, Ed25519
  keys (``SigningKey`` on an operator's machine, ``PublicKey`` on devices);
- ``_trust``: the ``Keyring`` (threshold 1, rotation, revocation), the
  ``TimeFloor`` (highest signed time seen; never the local clock) and
  ``verify_document`` (signature, type, expiry/freshness, counter, in that order);
- ``_artifact``: declared length then sha256 of a stream (``ArtifactDigest``)
  and a safe tar reader (``extract_archive``);
- ``_signing_errors``: one typed refusal per check, rooted at ``VerificationError``.

How to use it (docs/OTA.md has the whole flow)::

    envelope = Envelope.parse(manifest_bytes)
    header, keyid = verify_document(envelope, keyring, floor, expected_type="model-release",
                                    subject_field="name", active_counter=active)
    store(floor.advanced(header))            # durably, before the artifact is used
    verify_file(artifact_path, FileDigest(size, sha256))
    extract_archive(artifact_path, slot_dir, signed_files)
"""

from __future__ import annotations

from sync.shared._artifact import (
    ArtifactDigest,
    FileDigest,
    digest_archive,
    extract_archive,
    safe_member_path,
    verify_file,
)
from sync.shared._envelope import (
    MAX_ENVELOPE_BYTES,
    Envelope,
    PublicKey,
    Signature,
    SigningKey,
    canonical_json,
    key_id,
)
from sync.shared._signing_errors import (
    ArtifactTooLong,
    BadEnvelope,
    BadSignature,
    CounterNotAbove,
    ExpiredByFloor,
    HashMismatch,
    IssuedBeforeFloor,
    KeyRevoked,
    MissingSignature,
    SizeMismatch,
    UnsafeArchive,
    UntrustedKey,
    VerificationError,
    WrongDeviceClass,
    WrongType,
)
from sync.shared._trust import (
    KEYRING_TYPE,
    Keyring,
    SignedHeader,
    TimeFloor,
    verify_document,
    verify_signature,
)

__all__ = [
    "KEYRING_TYPE",
    "MAX_ENVELOPE_BYTES",
    "ArtifactDigest",
    "ArtifactTooLong",
    "BadEnvelope",
    "BadSignature",
    "CounterNotAbove",
    "Envelope",
    "ExpiredByFloor",
    "FileDigest",
    "HashMismatch",
    "IssuedBeforeFloor",
    "KeyRevoked",
    "Keyring",
    "MissingSignature",
    "PublicKey",
    "Signature",
    "SignedHeader",
    "SigningKey",
    "SizeMismatch",
    "TimeFloor",
    "UnsafeArchive",
    "UntrustedKey",
    "VerificationError",
    "WrongDeviceClass",
    "WrongType",
    "canonical_json",
    "digest_archive",
    "extract_archive",
    "key_id",
    "safe_member_path",
    "verify_document",
    "verify_file",
    "verify_signature",
]
