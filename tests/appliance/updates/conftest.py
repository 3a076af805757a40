"""One real release of the OCR model (the pinned files from models/, a new version
string), built once per session with the real runtime, and the keys that sign it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.updates.package import Build, build_release, sign_release
from sync.protocol.releases import RolloutPlan
from sync.shared.signing import Keyring, SigningKey

REPO = Path(__file__).resolve().parents[3]
MODELS_DIR = REPO / "models"
DEVICE_CLASS = "x86-cpu"
NEW_VERSION = "2026-12-07-rc1"


@dataclass(frozen=True)
class ReleaseKit:
    build: Build
    key: SigningKey
    keyring: Keyring
    issued_at: int

    def sign(
        self,
        *,
        counter: int = 2,
        issued_at: int | None = None,
        expires_in_s: int = 30 * 86_400,
        rollback: bool = False,
        key: SigningKey | None = None,
    ) -> bytes:
        """Signed manifest bytes of the session's release."""
        _, data = sign_release(
            self.build.archive,
            [key or self.key],
            counter=counter,
            issued_at=self.issued_at if issued_at is None else issued_at,
            expires_in_s=expires_in_s,
            rollout=RolloutPlan(canary_sites=["wh-nyc-01"]),
            rollback=rollback,
        )
        return data


@pytest.fixture(scope="session")
def release_kit(tmp_path_factory: pytest.TempPathFactory) -> ReleaseKit:
    root = tmp_path_factory.mktemp("release")
    build = build_release(
        MODELS_DIR,
        name="gate-ocr",
        version=NEW_VERSION,
        task="gate_ocr",
        device_classes=[DEVICE_CLASS],
        out=root / "release.tar",
        golden_frames=1,
    )
    key = SigningKey.generate()
    keyring = Keyring(version=1, keys={key.public.keyid: key.public}, issued_at=1_700_000_000)
    return ReleaseKit(build=build, key=key, keyring=keyring, issued_at=int(time.time()))
