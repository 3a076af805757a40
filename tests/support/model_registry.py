"""A signed release of the OCR model for the model registry tests, and publishing it.

The fixtures (``kit`` once per session, ``models_settings``, ``service``) are in
tests/cloud_ingest/models/conftest.py.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from appliance.updates.package import Build
from sync.protocol.releases import ReleaseManifest, RolloutPlan, sign_manifest
from sync.shared.signing import SigningKey
from tests.support.ingest import Ingest, bearer

__all__ = ["PLAN", "REPO", "VERSION", "Kit", "publish"]

REPO = Path(__file__).resolve().parents[2]
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
