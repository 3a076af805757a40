"""Every refusal of issue 17, each on a real signed release of the OCR model.

The checks run in the appliance's order (``verify_release``: manifest, then the
artifact's length and sha256, then each tar member).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from appliance.updates.package import verify_release
from sync.protocol.releases import ArtifactInfo, ReleaseManifest, sign_manifest, verify_manifest
from sync.shared.signing import (
    ArtifactTooLong,
    BadSignature,
    CounterNotAbove,
    Envelope,
    ExpiredByFloor,
    HashMismatch,
    IssuedBeforeFloor,
    KeyRevoked,
    Keyring,
    MissingSignature,
    SigningKey,
    SizeMismatch,
    TimeFloor,
    UnsafeArchive,
    UntrustedKey,
    VerificationError,
    WrongDeviceClass,
)
from tests.support.releases import DEVICE_CLASS, NEW_VERSION, ReleaseKit


def _verify(kit: ReleaseKit, manifest: bytes, archive: Path | None = None, **kw: object):
    return verify_release(
        archive or kit.build.archive,
        manifest,
        kw.pop("keyring", kit.keyring),  # type: ignore[arg-type]
        device_class=str(kw.pop("device_class", DEVICE_CLASS)),
        floor=kw.pop("floor", None),  # type: ignore[arg-type]
        active_counter=kw.pop("active_counter", 1),  # type: ignore[arg-type]
    )


def test_the_real_release_passes_every_check(release_kit: ReleaseKit):
    verified = _verify(release_kit, release_kit.sign())
    assert verified.manifest.version == NEW_VERSION
    assert verified.manifest.task == "gate_ocr"
    assert {f.path for f in verified.manifest.files} >= {
        "release.json",
        "model/ch_PP-OCRv4_det_infer.onnx",
        "model/ch_PP-OCRv4_rec_infer.onnx",
    }


def test_bad_signature(release_kit: ReleaseKit):
    envelope = Envelope.parse(release_kit.sign())
    forged = Envelope(
        {**envelope.signed, "device_classes": ["coral-v2", DEVICE_CLASS]}, envelope.signatures
    )
    with pytest.raises(BadSignature):
        _verify(release_kit, forged.to_bytes())


def test_missing_signature(release_kit: ReleaseKit):
    envelope = Envelope.parse(release_kit.sign())
    with pytest.raises(MissingSignature):
        _verify(release_kit, Envelope(envelope.signed, ()).to_bytes())


def test_untrusted_key(release_kit: ReleaseKit):
    with pytest.raises(UntrustedKey):
        _verify(release_kit, release_kit.sign(key=SigningKey.generate()))


def test_revoked_key_after_rotation(release_kit: ReleaseKit):
    new_key = SigningKey.generate()
    old = release_kit.key.public.keyid
    nxt = Keyring(
        version=2,
        keys={new_key.public.keyid: new_key.public},
        revoked=frozenset({old}),
        issued_at=release_kit.issued_at,
    )
    rotated = release_kit.keyring.rotated(
        Envelope.sign(nxt.signed_document(), [release_kit.key, new_key])
    )
    with pytest.raises(KeyRevoked):
        _verify(release_kit, release_kit.sign(), keyring=rotated)
    assert _verify(release_kit, release_kit.sign(key=new_key), keyring=rotated).keyid == (
        new_key.public.keyid
    )


def _altered_copy(kit: ReleaseKit, tmp_path: Path, change: str) -> Path:
    copy = tmp_path / "release.tar"
    shutil.copyfile(kit.build.archive, copy)
    with copy.open("r+b") as handle:
        if change == "flip":
            handle.seek(4096)
            byte = handle.read(1)
            handle.seek(4096)
            handle.write(bytes([byte[0] ^ 0x01]))
        elif change == "truncate":
            handle.truncate(copy.stat().st_size - 512)
        elif change == "append":
            handle.seek(0, 2)
            handle.write(b"\0" * 4096)
    return copy


def test_sha256_mismatch(release_kit: ReleaseKit, tmp_path: Path):
    with pytest.raises(HashMismatch):
        _verify(release_kit, release_kit.sign(), _altered_copy(release_kit, tmp_path, "flip"))


def test_size_mismatch_short(release_kit: ReleaseKit, tmp_path: Path):
    with pytest.raises(SizeMismatch) as caught:
        _verify(release_kit, release_kit.sign(), _altered_copy(release_kit, tmp_path, "truncate"))
    assert caught.value.retryable and not isinstance(caught.value, ArtifactTooLong)


def test_artifact_longer_than_declared(release_kit: ReleaseKit, tmp_path: Path):
    with pytest.raises(ArtifactTooLong):
        _verify(release_kit, release_kit.sign(), _altered_copy(release_kit, tmp_path, "append"))


def test_other_device_class(release_kit: ReleaseKit):
    with pytest.raises(WrongDeviceClass):
        _verify(release_kit, release_kit.sign(), device_class="coral-v2")


def test_counter_not_above_active_unless_signed_rollback(release_kit: ReleaseKit):
    for counter in (1, 2):
        with pytest.raises(CounterNotAbove):
            _verify(release_kit, release_kit.sign(counter=counter), active_counter=2)
    rollback = release_kit.sign(counter=1, rollback=True)
    assert _verify(release_kit, rollback, active_counter=2).manifest.rollback


@pytest.mark.parametrize("clock", [0.0, 4_102_444_800.0], ids=["1970", "2099"])
def test_freeze_and_expiry_judged_by_the_floor_not_the_clock(
    release_kit: ReleaseKit, clock: float, monkeypatch: pytest.MonkeyPatch
):
    t = release_kit.issued_at
    fresh = release_kit.sign(issued_at=t)
    expired = release_kit.sign(issued_at=t - 10 * 86_400, expires_in_s=86_400)
    stale = release_kit.sign(issued_at=t - 3600)
    # What the device has seen: this release's issue time (the floor), nothing later.
    floor = TimeFloor(highest_seen=t, per_subject={"gate-ocr": t})
    monkeypatch.setattr(time, "time", lambda: clock)
    monkeypatch.setattr(time, "time_ns", lambda: int(clock * 1e9))
    with pytest.raises(ExpiredByFloor):
        _verify(release_kit, expired, floor=floor)
    with pytest.raises(IssuedBeforeFloor):
        _verify(release_kit, stale, floor=floor)
    assert _verify(release_kit, fresh, floor=floor).manifest.issued_at == t


# -------------------------------------------------------------- signed but unsafe archives


def _evil_release(kit: ReleaseKit, tmp_path: Path, evil: tarfile.TarInfo) -> tuple[Path, bytes]:
    """The real release's members plus ``evil``, with a manifest a trusted key signed
    (artifact digest of this very tar): only the member checks can refuse it."""
    out = tmp_path / "evil.tar"
    with tarfile.open(kit.build.archive) as source, tarfile.open(out, "w") as tar:
        for member in source:
            tar.addfile(member, source.extractfile(member))
        tar.addfile(evil, io.BytesIO(b"x" * evil.size) if evil.isfile() else None)
    data = out.read_bytes()
    envelope = Envelope.parse(kit.sign())
    manifest = ReleaseManifest.model_validate(envelope.signed).model_copy(
        update={"artifact": ArtifactInfo(sha256=hashlib.sha256(data).hexdigest(), size=len(data))}
    )
    return out, sign_manifest(manifest, [kit.key]).to_bytes()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    "evil",
    [
        _member("../../etc/cron.d/evil"),
        _member("/etc/cron.d/evil"),
        _member("model/x.onnx", tarfile.SYMTYPE, "/etc/shadow"),
        _member("model/x.onnx", tarfile.LNKTYPE, "release.json"),
        _member("model/null", tarfile.CHRTYPE),
    ],
    ids=["dotdot", "absolute", "symlink", "hardlink", "device"],
)
def test_signed_archive_with_unsafe_member(
    release_kit: ReleaseKit, tmp_path: Path, evil: tarfile.TarInfo
):
    archive, manifest = _evil_release(release_kit, tmp_path, evil)
    with pytest.raises(UnsafeArchive):
        _verify(release_kit, manifest, archive)


def test_refusals_name_their_check_for_the_audit(release_kit: ReleaseKit):
    with pytest.raises(VerificationError) as caught:
        verify_manifest(
            release_kit.sign(),
            release_kit.keyring,
            TimeFloor(),
            device_class="coral-v2",
            active_counter=None,
        )
    assert caught.value.check == "device_class"
    assert json.loads(release_kit.sign())["signed"]["version"] == NEW_VERSION
