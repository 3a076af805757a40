"""The model registry: publish a signed release, keep its artifact content-addressed.

A published manifest is checked with the one verifier (``sync.shared.signing``)
against the service's trusted release keys (public keys only; the private key
never reaches the service): signature by a trusted, not revoked key, document
type, not expired by the service's clock, shape, a counter above every release
of the name published so far (unless a signed rollback), then the artifact's
length (reading stops past the declared size), sha256 and every tar member
against the signed file list.  Refusals are ``ReleaseRefused`` (4xx, ``check``).

Artifacts are objects ``models/artifacts/<sha256[:2]>/<sha256>`` of the
service's object store: with the embedded default that is a file under the data
directory (written through a temp file, fsynced and renamed), with an S3 store
(fleet mode) one object every instance serves, so a device may download from
any instance.  The artifact is spooled to a local temp file while it is checked
(its tar members are hashed from the file), then stored whole.  The signed
manifest is a row of the catalog (PostgreSQL in fleet mode), shared likewise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydantic import ValidationError

from cloud_ingest.errors import IngestError
from cloud_ingest.models.store import ReleaseRecord, ReleaseStore
from cloud_ingest.object_store import ObjectStore
from sync.protocol.releases import RELEASE_TYPE, ReleaseManifest
from sync.shared.signing import (
    ArtifactDigest,
    Envelope,
    FileDigest,
    Keyring,
    TimeFloor,
    VerificationError,
    digest_archive,
    verify_document,
)

__all__ = ["ModelRegistry", "PublishResult", "ReleaseRefused", "artifact_key", "load_keyring"]

_CHUNK: Final = 1 << 20


class ReleaseRefused(IngestError):
    """A release the service will not publish; ``check`` names the failed check."""

    status, error = 422, "release_refused"

    def __init__(self, check: str, detail: str, *, status: int | None = None) -> None:
        super().__init__(f"{check}: {detail}")
        self.check = check
        if status is not None:
            self.status = status


@dataclass(frozen=True, slots=True)
class PublishResult:
    release: ReleaseRecord
    created: bool  # False: this very manifest was published before (idempotent)


def load_keyring(path: Path) -> Keyring:
    """The trusted release keys: a keyring envelope as ``yardlink models keyring`` writes."""
    try:
        return Keyring.from_envelope(Envelope.parse(path.read_bytes()))
    except OSError as exc:
        raise ReleaseRefused("keyring", f"cannot read {path}: {exc.strerror}", status=500) from exc
    except VerificationError as exc:
        raise ReleaseRefused("keyring", f"{path}: {exc}", status=500) from exc


def artifact_key(sha256: str) -> str:
    """The object key of the artifact with this sha256 (content-addressed)."""
    return f"models/artifacts/{sha256[:2]}/{sha256}"


class ModelRegistry:
    def __init__(
        self, objects: ObjectStore, spool: Path, store: ReleaseStore, keyring: Keyring | None
    ) -> None:
        self.objects = objects  # where artifacts live (the service's object store)
        self.spool = spool  # local temp files of artifacts being received
        self.store = store
        self.keyring = keyring

    async def publish(
        self, manifest_bytes: bytes, artifact: AsyncIterator[bytes], *, actor: str, now: float
    ) -> PublishResult:
        verified, envelope_keyid = self._verify_manifest(manifest_bytes, now)
        held = await self.store.get_release(verified.name, verified.version)
        if held is not None and held.manifest != manifest_bytes:
            raise ReleaseRefused(
                "conflict",
                f"{verified.name} {verified.version} is published with another manifest",
                status=409,
            )
        if held is None and not verified.rollback:
            highest = await self.store.highest_counter(verified.name)
            if highest is not None and verified.counter <= highest:
                raise ReleaseRefused(
                    "counter_not_above",
                    f"{verified.name} counter {verified.counter} is not above the published"
                    f" {highest} and the manifest is not a signed rollback",
                    status=409,
                )
        await self._receive_artifact(verified, artifact)
        record = ReleaseRecord(
            name=verified.name,
            version=verified.version,
            counter=verified.counter,
            sha256=verified.artifact.sha256,
            size=verified.artifact.size,
            keyid=envelope_keyid,
            manifest=manifest_bytes,
            published_by=actor,
            published_at=now,
        )
        detail = {
            "counter": verified.counter,
            "sha256": verified.artifact.sha256,
            "size": verified.artifact.size,
            "keyid": envelope_keyid,
            "rollback": verified.rollback,
            "device_classes": verified.device_classes,
        }
        created = await self.store.add_release(record, detail)
        return PublishResult(record, created)

    def _verify_manifest(self, data: bytes, now: float) -> tuple[ReleaseManifest, str]:
        if self.keyring is None:
            raise ReleaseRefused(
                "untrusted_key", "the service has no trusted release keys (release_keyring_file)"
            )
        try:
            envelope = Envelope.parse(data)
            _, keyid = verify_document(
                envelope,
                self.keyring,
                TimeFloor(highest_seen=int(now)),  # the service's clock: refuse the expired
                expected_type=RELEASE_TYPE,
                subject_field="name",
                active_counter=None,  # compared with the published releases below
            )
        except VerificationError as exc:
            raise ReleaseRefused(exc.check, str(exc)) from exc
        try:
            return ReleaseManifest.model_validate(envelope.signed), keyid
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "manifest"
            raise ReleaseRefused("envelope", f"{where}: {error['msg']}") from exc

    async def _receive_artifact(
        self, manifest: ReleaseManifest, artifact: AsyncIterator[bytes]
    ) -> None:
        key = artifact_key(manifest.artifact.sha256)
        await asyncio.to_thread(self.spool.mkdir, parents=True, exist_ok=True)
        temp = self.spool / f"{manifest.artifact.sha256}.{os.getpid()}.{secrets.token_hex(6)}.part"
        digest = ArtifactDigest(manifest.artifact.digest(), what=f"{manifest.name} artifact")
        try:
            with temp.open("wb") as handle:
                async for chunk in artifact:
                    digest.feed(chunk)  # raises at the first byte past the declared size
                    await asyncio.to_thread(handle.write, chunk)
                digest.finish()
            files = await asyncio.to_thread(digest_archive, temp)
            _same_files(manifest, files)
            await asyncio.to_thread(self.objects.put_file, key, temp)  # durable, whole
        except VerificationError as exc:
            status = 413 if exc.check == "too_long" else None
            raise ReleaseRefused(exc.check, str(exc), status=status) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()


def _same_files(manifest: ReleaseManifest, files: dict[str, FileDigest]) -> None:
    signed = manifest.file_digests()
    if files != signed:
        extra = sorted(set(files) - set(signed))
        missing = sorted(set(signed) - set(files))
        differ = sorted(p for p in set(files) & set(signed) if files[p] != signed[p])
        raise ReleaseRefused(
            "files",
            f"the archive's files differ from the signed list (extra {extra},"
            f" missing {missing}, different {differ})",
        )
