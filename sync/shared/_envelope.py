"""The signed envelope: canonical JSON ``{"signed": {...}, "signatures": [{keyid, sig}]}``.

The signature covers the canonical form of ``signed`` (sorted keys, no spaces,
UTF-8, no NaN), so a manifest can be re-serialised anywhere and still verify.
Ed25519 through ``cryptography``; a key id is the sha256 of the raw public key.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.shared._signing_errors import BadEnvelope

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "Envelope",
    "PublicKey",
    "Signature",
    "SigningKey",
    "canonical_json",
    "key_id",
]

MAX_ENVELOPE_BYTES = 1 << 20  # a manifest is small; refuse anything larger unread
_HEX_ID_LEN = 64


def canonical_json(value: Any) -> bytes:
    """The one byte form that is signed: sorted keys, compact, UTF-8, no NaN/Infinity."""
    try:
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise BadEnvelope(f"not representable as canonical JSON: {exc}") from exc
    return text.encode("utf-8")


def key_id(raw_public: bytes) -> str:
    """Key id of an Ed25519 public key: hex sha256 of its 32 raw bytes."""
    return hashlib.sha256(raw_public).hexdigest()


@dataclass(frozen=True)
class PublicKey:
    """A trusted Ed25519 public key and its id."""

    keyid: str
    raw: bytes

    @classmethod
    def from_raw(cls, raw: bytes) -> PublicKey:
        if len(raw) != 32:
            raise BadEnvelope(f"an Ed25519 public key is 32 bytes, got {len(raw)}")
        return cls(keyid=key_id(raw), raw=raw)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> PublicKey:
        """``{"keyid", "scheme": "ed25519", "public": hex}``; the id must match the key."""
        if value.get("scheme") != "ed25519" or not isinstance(value.get("public"), str):
            raise BadEnvelope("a public key is {keyid, scheme: ed25519, public: hex}")
        try:
            key = cls.from_raw(bytes.fromhex(value["public"]))
        except ValueError as exc:
            raise BadEnvelope(f"public key is not hex: {exc}") from exc
        if value.get("keyid", key.keyid) != key.keyid:
            raise BadEnvelope(f"key id {value.get('keyid')} does not match its key {key.keyid}")
        return key

    def to_json(self) -> dict[str, str]:
        return {"keyid": self.keyid, "scheme": "ed25519", "public": self.raw.hex()}

    def verifies(self, signature: bytes, payload: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, payload)
        except InvalidSignature:
            return False
        return True


class SigningKey:
    """An Ed25519 private release key.  Lives on an operator's machine, never in the cloud."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public = PublicKey.from_raw(raw)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        """Read a PKCS#8 PEM private key written by :meth:`save`."""
        try:
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise BadEnvelope(f"cannot read private key {path}: {exc}") from exc
        if not isinstance(private, Ed25519PrivateKey):
            raise BadEnvelope(f"{path} is not an Ed25519 private key")
        return cls(private)

    def save(self, path: Path) -> None:
        """Write the private key as PEM, readable by its owner only (0600)."""
        pem = self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)

    def sign(self, payload: bytes) -> Signature:
        return Signature(keyid=self.public.keyid, sig=self._private.sign(payload).hex())


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: str  # hex of the 64-byte Ed25519 signature


@dataclass(frozen=True)
class Envelope:
    """A signed document.  ``signed`` is only trustworthy after verification."""

    signed: dict[str, Any]
    signatures: tuple[Signature, ...]

    @classmethod
    def sign(cls, signed: Mapping[str, Any], keys: Sequence[SigningKey]) -> Envelope:
        document = dict(signed)
        payload = canonical_json(document)
        return cls(signed=document, signatures=tuple(key.sign(payload) for key in keys))

    def payload(self) -> bytes:
        """The bytes the signatures cover."""
        return canonical_json(self.signed)

    def to_bytes(self) -> bytes:
        return canonical_json(
            {
                "signed": self.signed,
                "signatures": [{"keyid": s.keyid, "sig": s.sig} for s in self.signatures],
            }
        )

    @classmethod
    def parse(cls, data: bytes, *, max_bytes: int = MAX_ENVELOPE_BYTES) -> Envelope:
        """Shape check only (no trust): a JSON object with ``signed`` and ``signatures``."""
        if len(data) > max_bytes:
            raise BadEnvelope(f"envelope of {len(data)} bytes exceeds {max_bytes}")
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadEnvelope(f"envelope is not JSON: {exc}") from exc
        if not isinstance(value, dict) or set(value) != {"signed", "signatures"}:
            raise BadEnvelope("envelope must be an object with exactly signed and signatures")
        signed, raw_signatures = value["signed"], value["signatures"]
        if not isinstance(signed, dict) or not isinstance(raw_signatures, list):
            raise BadEnvelope("signed must be an object and signatures a list")
        signatures = []
        for entry in raw_signatures:
            if (
                not isinstance(entry, dict)
                or set(entry) != {"keyid", "sig"}
                or not isinstance(entry["keyid"], str)
                or not isinstance(entry["sig"], str)
                or len(entry["keyid"]) != _HEX_ID_LEN
            ):
                raise BadEnvelope("a signature is {keyid: 64 hex, sig: hex}")
            signatures.append(Signature(keyid=entry["keyid"], sig=entry["sig"]))
        return cls(signed=signed, signatures=tuple(signatures))
