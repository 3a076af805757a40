"""A real release of the OCR model (built with the release tooling and the real runtime,
once per session), the keys that sign it, and an ingest service that trusts them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from appliance.updates.package import build_release, sign_release
from cloud_ingest.settings import IngestSettings
from sync.shared.signing import Envelope, Keyring, SigningKey
from tests.support.ingest import Ingest, running_ingest
from tests.support.model_registry import PLAN, REPO, VERSION, Kit
from tests.support.postgres import PostgresServer


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


@pytest.fixture(params=["sqlite", "postgresql"])
async def models_settings(
    request: pytest.FixtureRequest, tmp_path: Path, kit: Kit
) -> AsyncIterator[IngestSettings]:
    """The service's settings, its catalog (and the model tables) on each backend."""
    settings = IngestSettings(
        data_dir=tmp_path / "data", sweep_interval_s=3600, release_keyring_file=kit.keyring_file
    )
    if request.param == "sqlite":
        yield settings
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    url = await server.create_database()
    try:
        yield settings.model_copy(update={"catalog": url})
    finally:
        await server.drop_database(url)


@pytest.fixture
async def service(models_settings: IngestSettings) -> AsyncIterator[Ingest]:
    async with running_ingest(models_settings) as running:
        yield running
