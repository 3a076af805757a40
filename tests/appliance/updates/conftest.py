"""One real release of the OCR model (the pinned files from models/, a new version
string), built once per session with the real runtime, and the keys that sign it."""

from __future__ import annotations

import time

import pytest

from appliance.updates.package import build_release
from sync.shared.signing import Keyring, SigningKey
from tests.support.releases import DEVICE_CLASS, MODELS_DIR, NEW_VERSION, ReleaseKit


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
