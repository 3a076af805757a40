"""The signed-artifact verifier: envelope, keyring, time floor, counter, length, hashes, tar."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from sync.shared.signing import (
    ArtifactDigest,
    ArtifactTooLong,
    BadEnvelope,
    BadSignature,
    CounterNotAbove,
    Envelope,
    ExpiredByFloor,
    FileDigest,
    HashMismatch,
    IssuedBeforeFloor,
    KeyRevoked,
    Keyring,
    MissingSignature,
    SignedHeader,
    SigningKey,
    SizeMismatch,
    TimeFloor,
    UnsafeArchive,
    UntrustedKey,
    VerificationError,
    WrongType,
    canonical_json,
    extract_archive,
    verify_document,
    verify_file,
)

T0 = 1_800_000_000  # a signed time, unix seconds


def _doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_type": "thing",
        "name": "ocr",
        "counter": 5,
        "issued_at": T0,
        "expires_at": T0 + 86_400,
        "rollback": False,
        "payload": "x",
    }
    doc.update(overrides)
    return doc


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def ring(key: SigningKey) -> Keyring:
    return Keyring(version=1, keys={key.public.keyid: key.public}, issued_at=T0 - 10)


def _verify(data: bytes, ring: Keyring, floor: TimeFloor | None = None, active: int | None = 4):
    return verify_document(
        Envelope.parse(data),
        ring,
        floor or TimeFloor(),
        expected_type="thing",
        subject_field="name",
        active_counter=active,
    )


def test_a_signed_document_verifies_after_any_reserialisation(key: SigningKey, ring: Keyring):
    envelope = Envelope.sign(_doc(), [key])
    header, keyid = _verify(envelope.to_bytes(), ring)
    assert keyid == key.public.keyid
    assert (header.subject, header.counter, header.issued_at) == ("ocr", 5, T0)
    # Same content, other key order and whitespace: the canonical form is what is signed.
    import json

    loose = json.dumps(json.loads(envelope.to_bytes()), indent=3).encode()
    assert _verify(loose, ring)[1] == key.public.keyid
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'.encode()


def test_missing_signature(ring: Keyring):
    with pytest.raises(MissingSignature) as caught:
        _verify(Envelope(_doc(), ()).to_bytes(), ring)
    assert caught.value.check == "signature_missing"


def test_a_changed_byte_breaks_the_signature(key: SigningKey, ring: Keyring):
    envelope = Envelope.sign(_doc(), [key])
    tampered = Envelope({**envelope.signed, "payload": "y"}, envelope.signatures)
    with pytest.raises(BadSignature):
        _verify(tampered.to_bytes(), ring)
    garbage = Envelope(envelope.signed, (type(envelope.signatures[0])(key.public.keyid, "zz"),))
    with pytest.raises(BadSignature):
        _verify(garbage.to_bytes(), ring)


def test_untrusted_key(ring: Keyring):
    stranger = SigningKey.generate()
    with pytest.raises(UntrustedKey):
        _verify(Envelope.sign(_doc(), [stranger]).to_bytes(), ring)


def test_revoked_key_is_refused_even_while_listed(key: SigningKey):
    ring = Keyring(
        version=2, keys={key.public.keyid: key.public}, revoked=frozenset({key.public.keyid})
    )
    with pytest.raises(KeyRevoked) as caught:
        _verify(Envelope.sign(_doc(), [key]).to_bytes(), ring)
    assert not caught.value.retryable


def test_rotation_new_key_trusted_old_key_revoked(key: SigningKey, ring: Keyring):
    new_key = SigningKey.generate()
    nxt = Keyring(
        version=2,
        keys={new_key.public.keyid: new_key.public},
        revoked=frozenset({key.public.keyid}),
        issued_at=T0,
    )
    # A keyring update must be signed by a key trusted now and a key of the new ring.
    with pytest.raises(UntrustedKey):
        ring.rotated(Envelope.sign(nxt.signed_document(), [new_key]))
    with pytest.raises(KeyRevoked):
        ring.rotated(Envelope.sign(nxt.signed_document(), [key]))  # revoked by the new ring
    rotated = ring.rotated(Envelope.sign(nxt.signed_document(), [key, new_key]))
    assert rotated.version == 2
    assert _verify(Envelope.sign(_doc(), [new_key]).to_bytes(), rotated)[1] == new_key.public.keyid
    with pytest.raises(KeyRevoked):
        _verify(Envelope.sign(_doc(), [key]).to_bytes(), rotated)
    # Signed by both while one is revoked: the trusted one carries it.
    assert _verify(Envelope.sign(_doc(), [key, new_key]).to_bytes(), rotated)[1] == (
        new_key.public.keyid
    )
    # No going back: same version, or un-revoking the old key.
    with pytest.raises(CounterNotAbove):
        rotated.rotated(Envelope.sign(nxt.signed_document(), [new_key]))
    back = Keyring(
        version=3, keys={key.public.keyid: key.public, new_key.public.keyid: new_key.public}
    )
    with pytest.raises(BadEnvelope, match="un-revoke"):
        rotated.rotated(Envelope.sign(back.signed_document(), [new_key]))


def test_keyring_document_round_trips(key: SigningKey, ring: Keyring):
    assert Keyring.from_document(ring.signed_document()) == ring
    with pytest.raises(WrongType):
        Keyring.from_document(_doc())


def test_wrong_type(key: SigningKey, ring: Keyring):
    with pytest.raises(WrongType):
        _verify(Envelope.sign(_doc(_type="image-bundle"), [key]).to_bytes(), ring)


@pytest.mark.parametrize("clock", [0.0, 4_102_444_800.0])  # 1970 and 2099
def test_the_floor_decides_expiry_and_freshness_never_the_clock(
    key: SigningKey, ring: Keyring, clock: float, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(time, "time", lambda: clock)
    monkeypatch.setattr(time, "time_ns", lambda: int(clock * 1e9))
    floor = TimeFloor(highest_seen=T0 + 86_400, per_subject={"ocr": T0 + 100})
    # Expired by the floor (the highest signed time ever seen), whatever the clock says.
    with pytest.raises(ExpiredByFloor):
        _verify(Envelope.sign(_doc(issued_at=T0 + 200), [key]).to_bytes(), ring, floor)
    # Issued before the newest release of this name already seen: a replay (freeze).
    fresh_expiry = T0 + 10 * 86_400
    with pytest.raises(IssuedBeforeFloor):
        _verify(Envelope.sign(_doc(expires_at=fresh_expiry), [key]).to_bytes(), ring, floor)
    # Another name's floor does not make this one stale; expiry still uses the highest.
    other = Envelope.sign(_doc(name="faces", expires_at=fresh_expiry), [key]).to_bytes()
    header, _ = _verify(other, ring, floor)
    advanced = floor.advanced(header)
    assert advanced.per_subject == {"ocr": T0 + 100, "faces": T0}
    assert advanced.highest_seen == T0 + 86_400  # never goes down
    ok = Envelope.sign(_doc(issued_at=T0 + 100, expires_at=fresh_expiry), [key]).to_bytes()
    assert _verify(ok, ring, floor)[0].counter == 5


def test_time_floor_persists_as_json():
    floor = TimeFloor(7, {"a": 3})
    assert TimeFloor.from_json(floor.to_json()) == floor
    with pytest.raises(BadEnvelope):
        TimeFloor.from_json({"highest_seen": "soon"})


def test_counter_must_climb_unless_signed_rollback(key: SigningKey, ring: Keyring):
    for counter in (3, 4):
        with pytest.raises(CounterNotAbove):
            _verify(Envelope.sign(_doc(counter=counter), [key]).to_bytes(), ring, active=4)
    rollback = Envelope.sign(_doc(counter=3, rollback=True), [key]).to_bytes()
    assert _verify(rollback, ring, active=4)[0].rollback
    assert _verify(Envelope.sign(_doc(counter=1), [key]).to_bytes(), ring, active=None)


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"signed": {}}',
        b'{"signed": [], "signatures": []}',
        b'{"signed": {}, "signatures": [{"keyid": "ab", "sig": "00"}]}',
        b" " * (2 << 20),
    ],
)
def test_malformed_envelopes(data: bytes):
    with pytest.raises(BadEnvelope):
        Envelope.parse(data)


def test_header_fields_must_be_integers(key: SigningKey, ring: Keyring):
    with pytest.raises(BadEnvelope):
        _verify(Envelope.sign(_doc(counter="5"), [key]).to_bytes(), ring)
    with pytest.raises(BadEnvelope):
        SignedHeader.read(_doc(issued_at=True), subject_field="name")


def test_key_files_round_trip(tmp_path: Path, key: SigningKey):
    path = tmp_path / "release.key"
    key.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert SigningKey.load(path).public == key.public
    (tmp_path / "bad.key").write_text("nope")
    with pytest.raises(BadEnvelope):
        SigningKey.load(tmp_path / "bad.key")


# ------------------------------------------------------------------ length and hashes


class EndlessStream(io.RawIOBase):
    """Serves zeros forever and counts what it served."""

    served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        buffer[:] = bytes(len(buffer))
        self.served += len(buffer)
        return len(buffer)


def test_reading_stops_past_the_declared_length():
    stream = EndlessStream()
    digest = ArtifactDigest(FileDigest(size=3 << 20, sha256="0" * 64))
    with pytest.raises(ArtifactTooLong):
        while True:
            digest.feed(stream.read(1 << 20) or b"")
    assert stream.served <= 4 << 20  # one chunk past the limit, then it stopped


def test_file_checks(tmp_path: Path):
    import hashlib

    path = tmp_path / "a.bin"
    path.write_bytes(b"hello")
    good = FileDigest(5, hashlib.sha256(b"hello").hexdigest())
    verify_file(path, good)
    with pytest.raises(ArtifactTooLong):
        verify_file(path, FileDigest(4, good.sha256))
    with pytest.raises(SizeMismatch) as short:
        verify_file(path, FileDigest(6, good.sha256))
    assert short.value.retryable  # a short download may be resumed
    with pytest.raises(HashMismatch):
        verify_file(path, FileDigest(5, "0" * 64))


# ------------------------------------------------------------------ safe tar


def _tar(path: Path, members: list[tarfile.TarInfo], contents: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            body = contents.get(member.name)
            tar.addfile(member, io.BytesIO(body) if body is not None else None)
    return path


def _file(name: str, body: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(body)
    return info, body


def _digests(files: dict[str, bytes]) -> dict[str, FileDigest]:
    import hashlib

    return {k: FileDigest(len(v), hashlib.sha256(v).hexdigest()) for k, v in files.items()}


def test_extracts_listed_files_with_checks(tmp_path: Path):
    info, body = _file("model/a.onnx", b"abc")
    archive = _tar(tmp_path / "r.tar", [info], {"model/a.onnx": body})
    out = tmp_path / "out"
    written = extract_archive(archive, out, _digests({"model/a.onnx": b"abc"}))
    assert [p.as_posix() for p in written] == ["model/a.onnx"]
    assert (out / "model/a.onnx").read_bytes() == b"abc"


def _link(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_file("../evil", b"x")[0], "'..'"),
        (_file("model/../../evil", b"x")[0], "'..'"),
        (_file("/etc/evil", b"x")[0], "absolute"),
        (_link("model/a.onnx", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
        (_link("model/a.onnx", tarfile.LNKTYPE, "model/b"), "hard link"),
        (_link("model/a.onnx", tarfile.CHRTYPE), "device"),
        (_link("model/a.onnx", tarfile.BLKTYPE), "device"),
        (_link("model/a.onnx", tarfile.FIFOTYPE), "FIFO"),
    ],
    ids=[
        "dotdot",
        "nested-dotdot",
        "absolute",
        "symlink",
        "hardlink",
        "chardev",
        "blockdev",
        "fifo",
    ],
)
def test_unsafe_members_are_refused_before_anything_is_written(
    tmp_path: Path, member: tarfile.TarInfo, reason: str
):
    contents = {member.name: b"x"} if member.isfile() else {}
    archive = _tar(tmp_path / "r.tar", [member], contents)
    out = tmp_path / "deep" / "out"
    with pytest.raises(UnsafeArchive, match=reason) as caught:
        extract_archive(archive, out, {"model/a.onnx": FileDigest(1, "0" * 64)})
    assert caught.value.check == "unsafe_archive"
    assert not (tmp_path / "evil").exists() and not out.exists()


def test_unlisted_missing_and_altered_members(tmp_path: Path):
    signed = _digests({"a": b"abc"})
    info, body = _file("b", b"abc")
    with pytest.raises(UnsafeArchive, match="not in the signed file list"):
        extract_archive(_tar(tmp_path / "1.tar", [info], {"b": body}), tmp_path / "o1", signed)
    with pytest.raises(SizeMismatch, match="missing"):
        extract_archive(_tar(tmp_path / "2.tar", [], {}), tmp_path / "o2", signed)
    info, body = _file("a", b"abd")
    with pytest.raises(HashMismatch):
        extract_archive(_tar(tmp_path / "3.tar", [info], {"a": body}), tmp_path / "o3", signed)
    info, body = _file("a", b"abcd")
    with pytest.raises(SizeMismatch):
        extract_archive(_tar(tmp_path / "4.tar", [info], {"a": body}), tmp_path / "o4", signed)
    (tmp_path / "5.tar").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(VerificationError):
        extract_archive(tmp_path / "5.tar", tmp_path / "o5", signed)
