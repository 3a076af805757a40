"""The model-release manifest: shape, signing, and the checks of verify_manifest."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sync.protocol.releases import (
    ArtifactInfo,
    ReleaseFile,
    ReleaseManifest,
    RolloutPlan,
    sign_manifest,
    verify_manifest,
)
from sync.shared.signing import (
    BadEnvelope,
    CounterNotAbove,
    Envelope,
    Keyring,
    SigningKey,
    TimeFloor,
    WrongDeviceClass,
    WrongType,
    extract_archive,
    verify_file,
)

T0 = 1_800_000_000


def _release(
    tmp_path: Path, contents: dict[str, bytes], **fields: Any
) -> tuple[Path, ReleaseManifest]:
    archive = tmp_path / "release.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, body in contents.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    data = archive.read_bytes()
    values: dict[str, Any] = {
        "name": "gate-ocr-rec",
        "version": "2026-12-07-rc1",
        "counter": 7,
        "task": "gate_ocr",
        "runtime": "onnxruntime",
        "device_classes": ["x86-cpu", "jetson-orin"],
        "artifact": ArtifactInfo(sha256=hashlib.sha256(data).hexdigest(), size=len(data)),
        "files": [
            ReleaseFile(path=n, sha256=hashlib.sha256(b).hexdigest(), size=len(b))
            for n, b in contents.items()
        ],
        "rollout": RolloutPlan(canary_sites=["wh-nyc-01"], stages=[5, 25, 100]),
        "issued_at": T0,
        "expires_at": T0 + 30 * 86_400,
    }
    values.update(fields)
    return archive, ReleaseManifest.model_validate(values)


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def ring(key: SigningKey) -> Keyring:
    return Keyring(version=1, keys={key.public.keyid: key.public})


def test_signed_release_verifies_and_extracts(tmp_path: Path, key: SigningKey, ring: Keyring):
    archive, manifest = _release(
        tmp_path, {"model/rec.onnx": b"\x08" * 1000, "release.json": b"{}"}
    )
    data = sign_manifest(manifest, [key]).to_bytes()
    verified = verify_manifest(data, ring, TimeFloor(), device_class="x86-cpu", active_counter=6)
    assert verified.manifest == manifest and verified.keyid == key.public.keyid
    assert verified.advanced_floor(TimeFloor()).per_subject == {"gate-ocr-rec": T0}
    verify_file(archive, verified.manifest.artifact.digest())
    extract_archive(archive, tmp_path / "slot", verified.manifest.file_digests())
    assert (tmp_path / "slot/model/rec.onnx").stat().st_size == 1000
    # The wire form carries the type under "_type" and round-trips exactly.
    signed = Envelope.parse(data).signed
    assert signed["_type"] == "model-release"
    assert ReleaseManifest.model_validate(signed) == manifest


def test_other_device_class_is_refused(tmp_path: Path, key: SigningKey, ring: Keyring):
    _, manifest = _release(tmp_path, {"a": b"1"})
    data = sign_manifest(manifest, [key]).to_bytes()
    with pytest.raises(WrongDeviceClass, match="coral-v2"):
        verify_manifest(data, ring, TimeFloor(), device_class="coral-v2", active_counter=None)


def test_counter_and_signed_rollback(tmp_path: Path, key: SigningKey, ring: Keyring):
    _, manifest = _release(tmp_path, {"a": b"1"}, counter=3)
    with pytest.raises(CounterNotAbove):
        verify_manifest(
            sign_manifest(manifest, [key]).to_bytes(),
            ring,
            TimeFloor(),
            device_class="x86-cpu",
            active_counter=7,
        )
    rollback = manifest.model_copy(update={"rollback": True})
    verified = verify_manifest(
        sign_manifest(rollback, [key]).to_bytes(),
        ring,
        TimeFloor(),
        device_class="x86-cpu",
        active_counter=7,
    )
    assert verified.manifest.rollback


def test_a_signed_document_of_another_type_is_not_a_release(key: SigningKey, ring: Keyring):
    envelope = Envelope.sign(
        {"_type": "image-bundle", "name": "x", "counter": 9, "issued_at": T0, "expires_at": T0 + 1},
        [key],
    )
    with pytest.raises(WrongType):
        verify_manifest(
            envelope.to_bytes(), ring, TimeFloor(), device_class="x86-cpu", active_counter=None
        )


def test_a_signed_but_malformed_manifest_is_refused(key: SigningKey, ring: Keyring):
    envelope = Envelope.sign(
        {
            "_type": "model-release",
            "name": "x",
            "counter": 9,
            "issued_at": T0,
            "expires_at": T0 + 1,
            "extra": 1,
        },
        [key],
    )
    with pytest.raises(BadEnvelope, match="malformed"):
        verify_manifest(
            envelope.to_bytes(), ring, TimeFloor(), device_class="x86-cpu", active_counter=None
        )


@pytest.mark.parametrize(
    "bad",
    [
        {"stages": [50, 20, 100]},
        {"stages": [10, 50]},
        {"stages": [0, 100]},
        {"max_failure_pct": 101},
        {"min_devices": 0},
        {"canary_sites": ["../x"]},
    ],
)
def test_rollout_plan_limits(bad: dict[str, Any]):
    with pytest.raises(ValidationError):
        RolloutPlan(**bad)


@pytest.mark.parametrize("path", ["../x", "/abs", "a/../b", "./a", "a//b", ""])
def test_file_paths_are_plain_relative(path: str):
    with pytest.raises(ValidationError):
        ReleaseFile(path=path, sha256="0" * 64, size=1)


def test_manifest_consistency(tmp_path: Path):
    with pytest.raises(ValidationError, match="expires_at"):
        _release(tmp_path, {"a": b"1"}, expires_at=T0)
    with pytest.raises(ValidationError, match="twice"):
        _release(tmp_path, {"a": b"1"}, files=[ReleaseFile(path="a", sha256="0" * 64, size=1)] * 2)
    with pytest.raises(ValidationError):
        _release(tmp_path, {"a": b"1"}, device_classes=[])
