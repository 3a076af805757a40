"""Building a bundle: byte-reproducible, every file listed and signed, headers normalised."""

from __future__ import annotations

import hashlib
from pathlib import Path

from appliance.inference.model_files import MODEL_FILES
from appliance.inference.model_fold import FOLDS
from appliance.inference.quantize import DET_INT8_MODEL, DET_INT8_RECORD
from image_build.build import BuiltBundle, build_from_checkout
from image_build.install import verify_bundle
from image_build.manifest import MANIFEST_MEMBER
from image_build.platforms import Platform
from sync.shared.signing import Envelope, Keyring, SigningKey
from tests.image_build.bundle_kit import (
    CHECKOUT,
    EPOCH,
    SLIM_PREFIXES,
    read_members,
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_builds_of_one_commit_are_byte_identical(
    tmp_path: Path,
    head_commit: str,
    release_key: SigningKey,
    keyring: Keyring,
    slim_wheelhouse: Path,
) -> None:
    builds = [
        build_from_checkout(
            CHECKOUT,
            tmp_path / name,
            platform=Platform.X86_64,
            signing_key=release_key,
            keyring=keyring,
            commit=head_commit,
            wheelhouse_dir=slim_wheelhouse,
        )
        for name in ("first", "second")
    ]
    first, second = builds
    assert first.path.name == second.path.name
    assert first.path.name.startswith("yardlink-") and first.path.name.endswith("-x86_64.tar.zst")
    assert _sha256(first.path) == _sha256(second.path) == first.sha256 == second.sha256
    assert first.manifest_path.read_bytes() == second.manifest_path.read_bytes()


def test_a_bundle_holds_every_file_once_with_normalised_headers(
    default_slim: BuiltBundle, keyring: Keyring
) -> None:
    built = default_slim
    members = read_members(built.path)
    names = [info.name for info, _ in members]
    assert names[0] == MANIFEST_MEMBER
    assert names[1:] == sorted(names[1:])
    for info, _ in members:
        assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", "")
        assert (info.mode, info.mtime, info.isfile()) == (0o644, EPOCH, True)
    kinds = {name.split("/")[0] for name in names[1:]}
    assert kinds == {"wheels", "models", "systemd", "config", "keys"}
    models = {n.removeprefix("models/") for n in names if n.startswith("models/")}
    # the pinned files, and the INT8 detector and folded files 'make models' made from them
    folds = {name for fold in FOLDS for name in (fold.folded, fold.record)}
    made = {DET_INT8_MODEL, DET_INT8_RECORD} | folds
    assert models == {spec.name for spec in MODEL_FILES} | made
    wheels = [n for n in names if n.startswith("wheels/")]
    assert len(wheels) == len(SLIM_PREFIXES) + 1  # the dependencies and yardlink itself
    assert any(n.startswith("wheels/yardlink-") for n in wheels)
    signed = Envelope.parse(members[0][1]).signed
    contents = dict((info.name, data) for info, data in members)
    for name, entry in signed["files"].items():
        assert entry["sha256"] == hashlib.sha256(contents[name]).hexdigest()
        assert entry["size"] == len(contents[name])
    assert set(signed["files"]) == set(names[1:])
    manifest = verify_bundle(built.path, keyring, platform=Platform.X86_64)
    assert manifest.header.counter == 100 and manifest.version == built.manifest.version
    # zstd over wheels (already compressed) and float model weights (~0.9 of their size)
    assert 0.8 < built.size / built.payload_bytes < 1.05


def test_the_unit_and_site_template_are_what_systemd_and_the_appliance_need(
    default_slim: BuiltBundle,
) -> None:
    contents = {info.name: data for info, data in read_members(default_slim.path)}
    unit = contents["systemd/yardlink@.service"].decode()
    for line in (
        "Type=notify",
        "WatchdogSec=30",
        "Restart=on-failure",
        "StateDirectory=yardlink",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "User=yardlink",
        "ReadWritePaths=@PREFIX@/var/lib/yardlink",
    ):
        assert line in unit.splitlines()
    assert b'data_dir = "/var/lib/yardlink"' in contents["config/site.toml"]
