"""Typed refusals of the signed-artifact verifier: one class per check.

``sync.shared`` is imported by both the appliance and the cloud service, so its
errors have their own root here (like ``sync.protocol.WireFormatError``) instead
of pulling in ``sync.errors``.  Every refusal is permanent for that artifact
(``retryable = False``) except a download that stopped short, which a resume
may complete.  ``check`` names the check that failed, for audit records.
"""

from __future__ import annotations

__all__ = [
    "ArtifactTooLong",
    "BadEnvelope",
    "BadSignature",
    "CounterNotAbove",
    "ExpiredByFloor",
    "HashMismatch",
    "IssuedBeforeFloor",
    "KeyRevoked",
    "MissingSignature",
    "SizeMismatch",
    "UnsafeArchive",
    "UntrustedKey",
    "VerificationError",
    "WrongDeviceClass",
    "WrongType",
]


class VerificationError(Exception):
    """Root of every refusal of a signed artifact.  Never use what was refused."""

    retryable: bool = False
    user_facing: bool = True
    check: str = "verification"


class BadEnvelope(VerificationError):
    """The bytes are not a signed envelope (not JSON, wrong shape, too large)."""

    check = "envelope"


class MissingSignature(VerificationError):
    """The envelope carries no signature at all."""

    check = "signature_missing"


class UntrustedKey(VerificationError):
    """No signature is by a key of the trusted keyring."""

    check = "untrusted_key"


class KeyRevoked(VerificationError):
    """The only signatures are by keys that were revoked."""

    check = "revoked_key"


class BadSignature(VerificationError):
    """A trusted key's signature does not verify: the content was changed."""

    check = "bad_signature"


class WrongType(VerificationError):
    """The signed content is another kind of document (an image bundle for a model)."""

    check = "wrong_type"


class IssuedBeforeFloor(VerificationError):
    """Freeze attack: issued before the latest signed time already seen for this subject."""

    check = "issued_before_floor"


class ExpiredByFloor(VerificationError):
    """Expired by the highest signed time ever seen (never the local clock)."""

    check = "expired"


class CounterNotAbove(VerificationError):
    """Rollback attack: the release counter is not above the active one."""

    check = "counter_not_above"


class WrongDeviceClass(VerificationError):
    """Mix-and-match: the artifact targets other device classes."""

    check = "device_class"


class SizeMismatch(VerificationError):
    """The artifact or a file in it is shorter or longer than declared."""

    check = "size"

    def __init__(self, message: str, *, short: bool = False) -> None:
        super().__init__(message)
        # A download that stopped short may be resumed; anything else may not.
        self.retryable = short


class ArtifactTooLong(SizeMismatch):
    """Endless-data attack: more bytes than declared; reading stopped at the limit."""

    check = "too_long"


class HashMismatch(VerificationError):
    """The sha256 of the artifact or of a file in it differs from the signed one."""

    check = "sha256"


class UnsafeArchive(VerificationError):
    """A tar member escapes the target (``..``, absolute path), is a link or a device."""

    check = "unsafe_archive"
