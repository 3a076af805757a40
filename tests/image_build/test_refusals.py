"""What an install refuses, before it writes a single byte under ROOT."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from image_build.build import BuiltBundle
from image_build.errors import BundleRefused
from image_build.install import InstallOptions, install, verify_bundle
from image_build.layout import ImageState, Layout
from image_build.platforms import Platform
from sync.shared.signing import Keyring, SigningKey, TimeFloor
from tests.image_build.bundle_kit import (
    EPOCH,
    BundleFactory,
    change_member,
    member,
    read_members,
    tree_snapshot,
    write_members,
)


@pytest.fixture
def trust_file(tmp_path: Path, default_slim: BuiltBundle) -> Path:
    path = tmp_path / "keyring.json"
    path.write_bytes(member(default_slim.path, "keys/keyring.json"))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The empty ROOT an install is refused into."""
    path = tmp_path / "root"
    path.mkdir()
    return path


def _install_refused(bundle: Path, root: Path, trust: Path, check: str | tuple[str, ...]) -> None:
    before = tree_snapshot(root)
    options = InstallOptions(root=root, platform=Platform.X86_64, device_id="gate-01", trust=trust)
    with pytest.raises(BundleRefused) as refused:
        install(bundle, options, service=None)
    checks = (check,) if isinstance(check, str) else check
    assert refused.value.check in checks, str(refused.value)
    assert tree_snapshot(root) == before  # not a byte written


def _flip(data: bytes, at: int | None = None) -> bytes:
    index = len(data) // 2 if at is None else at
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize(
    ("member_prefix", "check"),
    [
        ("wheels/pip-", "sha256"),
        ("wheels/yardlink-", "sha256"),
        ("models/ch_PP-OCRv4_det", "sha256"),
        ("systemd/", "sha256"),
        ("config/", "sha256"),
        ("keys/", "sha256"),
    ],
)
def test_one_flipped_byte_in_any_file_is_refused(
    root: Path, bundle_copy: Path, trust_file: Path, member_prefix: str, check: str
) -> None:
    names = [info.name for info, _ in read_members(bundle_copy)]
    index = next(i for i, name in enumerate(names) if name.startswith(member_prefix))
    change_member(bundle_copy, index, _flip)
    _install_refused(bundle_copy, root, trust_file, check)


def test_a_changed_signed_field_is_refused(root: Path, bundle_copy: Path, trust_file: Path) -> None:
    def raise_counter(data: bytes) -> bytes:
        tampered = data.replace(b'"counter":100', b'"counter":900')
        assert tampered != data and len(tampered) == len(data)
        return tampered

    change_member(bundle_copy, 0, raise_counter)
    _install_refused(bundle_copy, root, trust_file, "bad_signature")


def test_a_flipped_signature_is_refused(root: Path, bundle_copy: Path, trust_file: Path) -> None:
    def flip_signature(data: bytes) -> bytes:
        envelope = json.loads(data)
        sig = envelope["signatures"][0]["sig"]
        envelope["signatures"][0]["sig"] = ("0" if sig[0] != "0" else "1") + sig[1:]
        return json.dumps(envelope).encode()

    change_member(bundle_copy, 0, flip_signature)
    _install_refused(bundle_copy, root, trust_file, "bad_signature")


def test_a_bundle_signed_by_another_key_is_refused(
    tmp_path: Path, root: Path, slim_bundle: BundleFactory, trust_file: Path
) -> None:
    stranger = SigningKey.generate()
    bundle = slim_bundle(tmp_path / "out", signing_key=stranger).path
    _install_refused(bundle, root, trust_file, "untrusted_key")


def test_a_file_added_to_the_bundle_is_refused(
    root: Path, bundle_copy: Path, trust_file: Path
) -> None:
    members = read_members(bundle_copy)
    info, _ = members[-1]
    extra = type(info)("models/extra.onnx")
    members.append((extra, b"not signed"))
    write_members(bundle_copy, members)
    _install_refused(bundle_copy, root, trust_file, "members")


@pytest.mark.parametrize("keep", [0.5, 0.99, -1])
def test_a_truncated_bundle_is_refused(
    root: Path, bundle_copy: Path, trust_file: Path, keep: float
) -> None:
    data = bundle_copy.read_bytes()
    cut = len(data) - 1 if keep == -1 else int(len(data) * keep)
    bundle_copy.write_bytes(data[:cut])
    _install_refused(bundle_copy, root, trust_file, ("truncated", "corrupt"))


def test_bytes_after_the_bundle_are_refused(
    root: Path, bundle_copy: Path, trust_file: Path
) -> None:
    bundle_copy.write_bytes(bundle_copy.read_bytes() + b"\0" * 16)
    _install_refused(bundle_copy, root, trust_file, "trailing_data")


def test_a_bundle_for_another_platform_is_refused(
    tmp_path: Path, root: Path, slim_bundle: BundleFactory, trust_file: Path
) -> None:
    bundle = slim_bundle(tmp_path / "out", platform=Platform.AARCH64).path
    assert bundle.name.endswith("-aarch64.tar.zst")
    _install_refused(bundle, root, trust_file, "platform")


def _gateway_at(root: Path, trust_file: Path, counter: int, floor: int) -> None:
    layout = Layout(root)
    layout.etc.mkdir(parents=True)
    shutil.copyfile(trust_file, layout.keyring_file)
    layout.base.mkdir(parents=True)
    ImageState(active="a", counter=counter, version="0.1.0", floor=TimeFloor(floor, {})).save(
        layout.state_file
    )


def test_an_older_release_is_refused_unless_a_signed_rollback(
    tmp_path: Path, root: Path, slim_bundle: BundleFactory, trust_file: Path, keyring: Keyring
) -> None:
    _gateway_at(root, trust_file, counter=200, floor=EPOCH)
    older = slim_bundle(tmp_path / "older", counter=100).path
    _install_refused(older, root, trust_file, "counter_not_above")
    rollback = slim_bundle(tmp_path / "rollback", counter=100, rollback=True).path
    manifest = verify_bundle(
        rollback, keyring, platform=Platform.X86_64, floor=TimeFloor(EPOCH), active_counter=200
    )
    assert manifest.header.rollback and manifest.header.counter == 100


def test_an_expired_bundle_is_refused_whatever_the_local_clock(
    tmp_path: Path, root: Path, slim_bundle: BundleFactory, trust_file: Path
) -> None:
    _gateway_at(root, trust_file, counter=50, floor=EPOCH + 10)
    stale = slim_bundle(tmp_path / "stale", counter=100, expires_at=EPOCH + 5).path
    _install_refused(stale, root, trust_file, "expired")


def test_a_root_that_trusts_no_key_is_refused(root: Path, bundle_copy: Path) -> None:
    from image_build.errors import InstallError

    options = InstallOptions(root=root, platform=Platform.X86_64, device_id="gate-01")
    with pytest.raises(InstallError, match="trusts no release key"):
        install(bundle_copy, options, service=None)
    assert tree_snapshot(root) == {}
