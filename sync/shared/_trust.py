"""What a device trusts: a keyring (rotation, revocation) and a floor of signed time.

Pure state, no I/O and no clock: the caller loads and stores them durably.
Checks run in the TUF order (docs/OTA.md): trusted key and signature, document
type, expiry and freshness against the highest signed time ever seen, counter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sync.shared._envelope import Envelope, PublicKey
from sync.shared._signing_errors import (
    BadEnvelope,
    BadSignature,
    CounterNotAbove,
    ExpiredByFloor,
    IssuedBeforeFloor,
    KeyRevoked,
    MissingSignature,
    UntrustedKey,
    WrongType,
)

__all__ = [
    "KEYRING_TYPE",
    "Keyring",
    "SignedHeader",
    "TimeFloor",
    "verify_document",
    "verify_signature",
]

KEYRING_TYPE = "keyring"


@dataclass(frozen=True)
class Keyring:
    """Trusted release keys (threshold 1) and revoked key ids (never trusted again)."""

    version: int
    keys: Mapping[str, PublicKey]
    revoked: frozenset[str] = frozenset()
    issued_at: int = 0  # signed time of this keyring: the first floor of a fresh device

    def trusted(self, keyid: str) -> PublicKey | None:
        if keyid in self.revoked:
            return None
        return self.keys.get(keyid)

    def signed_document(self) -> dict[str, Any]:
        return {
            "_type": KEYRING_TYPE,
            "version": self.version,
            "issued_at": self.issued_at,
            "keys": [self.keys[k].to_json() for k in sorted(self.keys)],
            "revoked": sorted(self.revoked),
        }

    @classmethod
    def from_document(cls, signed: Mapping[str, Any]) -> Keyring:
        if signed.get("_type") != KEYRING_TYPE:
            raise WrongType(f"expected a {KEYRING_TYPE}, got {signed.get('_type')!r}")
        version = _as_int(signed.get("version"), "keyring version")
        issued_at = _as_int(signed.get("issued_at", 0), "keyring issued_at")
        raw_keys, revoked = signed.get("keys"), signed.get("revoked", [])
        if version < 1:
            raise BadEnvelope("a keyring version starts at 1")
        if not isinstance(raw_keys, list) or not isinstance(revoked, list):
            raise BadEnvelope("keyring keys and revoked must be lists")
        keys = {}
        for raw in raw_keys:
            if not isinstance(raw, dict):
                raise BadEnvelope("a keyring key must be an object")
            key = PublicKey.from_json(raw)
            keys[key.keyid] = key
        if not all(isinstance(k, str) for k in revoked):
            raise BadEnvelope("revoked must list key ids")
        return cls(version=version, keys=keys, revoked=frozenset(revoked), issued_at=issued_at)

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> Keyring:
        """The root of trust as shipped (in the image): a keyring signed by one of its
        own keys.  Trusted because of where it came from; the signature only shows
        that it is whole and that its author held a key it lists."""
        keyring = cls.from_document(envelope.signed)
        verify_signature(envelope, keyring)
        return keyring

    def rotated(self, envelope: Envelope) -> Keyring:
        """The next keyring, if ``envelope`` is signed by a key trusted now AND by a key
        of the new ring, has a higher version and keeps every revocation (a revoked
        key never comes back)."""
        new = Keyring.from_document(envelope.signed)
        verify_signature(envelope, self)
        verify_signature(envelope, new)
        if new.version <= self.version:
            raise CounterNotAbove(f"keyring version {new.version} is not above {self.version}")
        if not self.revoked <= new.revoked:
            raise BadEnvelope("a keyring update may not un-revoke a key")
        return new


@dataclass(frozen=True)
class SignedHeader:
    """The fields every signed artifact carries, read from ``signed``."""

    type: str
    subject: str  # what the counter and freshness are kept for (a model name, "image")
    counter: int
    issued_at: int  # unix seconds, signed
    expires_at: int
    rollback: bool

    @classmethod
    def read(cls, signed: Mapping[str, Any], *, subject_field: str) -> SignedHeader:
        subject, rollback = signed.get(subject_field), signed.get("rollback", False)
        if not isinstance(subject, str) or not isinstance(rollback, bool):
            raise BadEnvelope(f"{subject_field} must be a string and rollback a boolean")
        return cls(
            type=str(signed.get("_type")),
            subject=subject,
            counter=_as_int(signed.get("counter"), "counter"),
            issued_at=_as_int(signed.get("issued_at"), "issued_at"),
            expires_at=_as_int(signed.get("expires_at"), "expires_at"),
            rollback=rollback,
        )


@dataclass(frozen=True)
class TimeFloor:
    """The highest signed time a device has seen, overall and per subject.

    Expiry is judged against ``highest_seen`` (any signed time is evidence of
    "now"); freshness (freeze attack) against the subject's own latest
    ``issued_at``, so a release of one model does not make another model's
    current release look stale.  The local clock is never read.
    """

    highest_seen: int = 0
    per_subject: Mapping[str, int] = field(default_factory=dict)

    def check(self, header: SignedHeader) -> None:
        if header.expires_at <= self.highest_seen:
            raise ExpiredByFloor(
                f"{header.subject}: expired at {header.expires_at}, the device has seen"
                f" signed time {self.highest_seen}"
            )
        subject_floor = self.per_subject.get(header.subject, 0)
        if header.issued_at < subject_floor:
            raise IssuedBeforeFloor(
                f"{header.subject}: issued at {header.issued_at}, before the newest signed"
                f" release already seen ({subject_floor}): a replay of an old manifest"
            )

    def advanced(self, header: SignedHeader) -> TimeFloor:
        subjects = dict(self.per_subject)
        subjects[header.subject] = max(subjects.get(header.subject, 0), header.issued_at)
        return TimeFloor(max(self.highest_seen, header.issued_at), subjects)

    def to_json(self) -> dict[str, Any]:
        return {"highest_seen": self.highest_seen, "per_subject": dict(self.per_subject)}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> TimeFloor:
        highest, subjects = value.get("highest_seen", 0), value.get("per_subject", {})
        if not _is_int(highest) or not isinstance(subjects, dict):
            raise BadEnvelope("time floor is {highest_seen: int, per_subject: {name: int}}")
        if not all(isinstance(k, str) and _is_int(v) for k, v in subjects.items()):
            raise BadEnvelope("time floor per_subject maps names to integers")
        return cls(highest, dict(subjects))


def verify_signature(envelope: Envelope, keyring: Keyring) -> str:
    """The id of a trusted key whose signature verifies; else the most telling refusal."""
    if not envelope.signatures:
        raise MissingSignature("the envelope carries no signature")
    payload = envelope.payload()
    seen_revoked = seen_bad = False
    for signature in envelope.signatures:
        if signature.keyid in keyring.revoked:
            seen_revoked = True
            continue
        key = keyring.trusted(signature.keyid)
        if key is None:
            continue
        try:
            raw = bytes.fromhex(signature.sig)
        except ValueError:
            seen_bad = True
            continue
        if key.verifies(raw, payload):
            return key.keyid
        seen_bad = True
    ids = ", ".join(s.keyid[:16] for s in envelope.signatures)
    if seen_bad:
        raise BadSignature(f"the signature of a trusted key does not verify (keys {ids})")
    if seen_revoked:
        raise KeyRevoked(f"signed only by revoked keys ({ids})")
    raise UntrustedKey(f"signed by no trusted key ({ids})")


def verify_document(
    envelope: Envelope,
    keyring: Keyring,
    floor: TimeFloor,
    *,
    expected_type: str,
    subject_field: str,
    active_counter: int | None,
) -> tuple[SignedHeader, str]:
    """Verify an envelope's trust in TUF order; return its header and the signing key id.

    Then the caller stores ``floor.advanced(header)`` durably before using the
    artifact, and checks length and hashes while reading it.
    """
    keyid = verify_signature(envelope, keyring)
    if envelope.signed.get("_type") != expected_type:
        raise WrongType(f"expected a {expected_type}, got {envelope.signed.get('_type')!r}")
    header = SignedHeader.read(envelope.signed, subject_field=subject_field)
    floor.check(header)
    if active_counter is not None and header.counter <= active_counter and not header.rollback:
        raise CounterNotAbove(
            f"{header.subject}: release counter {header.counter} is not above the"
            f" active {active_counter} and the manifest is not a signed rollback"
        )
    return header, keyid


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadEnvelope(f"{what} must be an integer, got {value!r}")
    return value
