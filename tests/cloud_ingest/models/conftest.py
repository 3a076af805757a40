"""A real release of the OCR model (built with the release tooling and the real runtime,
once per session), the keys that sign it, and an ingest service that trusts them."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from appliance.updates.package import Build, build_release, sign_release
from cloud_ingest.settings import IngestSettings
from sync.protocol.releases import ReleaseManifest, RolloutPlan, sign_manifest
from sync.shared.signing import Envelope, Keyring, SigningKey
from tests.support.ingest import Ingest, bearer, running_ingest

REPO = Path(__file__).resolve().parents[3]
VERSION = "2026-12-07-rc1"
PLAN = RolloutPlan(
    canary_sites=["wh-nyc-01"], stages=[50, 100], max_failure_pct=2.0, min_devices=3, bake_s=60
)


@dataclass(frozen=True)
class Kit:
    build: Build
    key: SigningKey
    revoked_key: SigningKey  # listed in the keyring and revoked
    keyring_file: Path
    manifest: ReleaseManifest
    signed: bytes  # the manifest as 'yardlink models sign' writes it

    def resign(self, key: SigningKey | None = None, **changes: object) -> bytes:
        """The manifest with ``changes``, signed by ``key`` (the trusted one by default)."""
        manifest = ReleaseManifest.model_validate({**self.manifest.signed_document(), **changes})
        return sign_manifest(manifest, [key or self.key]).to_bytes()


@pytest.fixture(scope="session")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    root = tmp_path_factory.mktemp("ingest-release")
    build = build_release(
        REPO / "models",
        name="gate-ocr",
        version=VERSION,
        task="gate_ocr",
        device_classes=["x86-cpu"],
        out=root / "release.tar",
        golden_frames=1,
    )
    key, revoked = SigningKey.generate(), SigningKey.generate()
    keyring = Keyring(
        version=1,
        keys={key.public.keyid: key.public, revoked.public.keyid: revoked.public},
        revoked=frozenset({revoked.public.keyid}),
        issued_at=1_700_000_000,
    )
    keyring_file = root / "keyring.json"
    keyring_file.write_bytes(Envelope.sign(keyring.signed_document(), [key]).to_bytes())
    manifest, signed = sign_release(
        build.archive,
        [key],
        counter=2,
        issued_at=int(time.time()),
        expires_in_s=30 * 86_400,
        rollout=PLAN,
    )
    return Kit(build, key, revoked, keyring_file, manifest, signed)


@pytest.fixture
def models_settings(tmp_path: Path, kit: Kit) -> IngestSettings:
    return IngestSettings(
        data_dir=tmp_path / "data", sweep_interval_s=3600, release_keyring_file=kit.keyring_file
    )


@pytest.fixture
async def service(models_settings: IngestSettings) -> AsyncIterator[Ingest]:
    async with running_ingest(models_settings) as running:
        yield running


async def publish(
    ingest: Ingest, token: str, manifest: bytes, artifact: bytes
) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    form.add_field(
        "manifest", io.BytesIO(manifest), filename="manifest.json", content_type="application/json"
    )
    form.add_field(
        "artifact", io.BytesIO(artifact), filename="release.tar", content_type="application/x-tar"
    )
    return await ingest.client.post("/v1/admin/models", data=form, headers=bearer(token))
