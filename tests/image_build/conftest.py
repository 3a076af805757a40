"""Shared inputs of the image tests: a release key, the project wheel of HEAD, wheelhouses.

The full wheelhouse (every runtime dependency for x86_64) is downloaded once
into ``~/.cache/yardlink-wheelhouse`` and reused by later runs; the fast tests
pack a slim wheelhouse (a few pure-Python wheels and pip) so that a build takes
seconds, and the slow tests the full one.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from image_build.build import DEFAULT_LIFETIME_S, BuildRequest, BuiltBundle, assemble
from image_build.platforms import Platform
from image_build.source import build_project_wheel, commit_time, export_commit
from image_build.wheelhouse import runtime_requirements, wheelhouse
from sync.shared.signing import Keyring, SigningKey

CHECKOUT = Path(__file__).resolve().parents[2]
MODELS = CHECKOUT / "models"
SLIM_PREFIXES = ("pip-", "idna-", "attrs-", "aiosqlite-")
EPOCH = 1_780_000_000  # the signed time of the test bundles

BundleFactory = Callable[..., BuiltBundle]


@pytest.fixture(scope="session")
def release_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="session")
def keyring(release_key: SigningKey) -> Keyring:
    return Keyring(version=1, keys={release_key.public.keyid: release_key.public})


@pytest.fixture(scope="session")
def head_commit() -> str:
    return subprocess.run(
        ["git", "-C", str(CHECKOUT), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture(scope="session")
def source_tree(tmp_path_factory: pytest.TempPathFactory, head_commit: str) -> Path:
    tree = tmp_path_factory.mktemp("source")
    export_commit(CHECKOUT, head_commit, tree)
    return tree


@pytest.fixture(scope="session")
def project_wheel(
    tmp_path_factory: pytest.TempPathFactory, source_tree: Path, head_commit: str
) -> Path:
    out = tmp_path_factory.mktemp("dist")
    return build_project_wheel(
        source_tree, out, source_date_epoch=commit_time(CHECKOUT, head_commit)
    )


@pytest.fixture(scope="session")
def full_wheelhouse(source_tree: Path) -> Path:
    return wheelhouse(Platform.X86_64, runtime_requirements(source_tree / "pyproject.toml"))


@pytest.fixture(scope="session")
def slim_wheelhouse(tmp_path_factory: pytest.TempPathFactory, full_wheelhouse: Path) -> Path:
    slim = tmp_path_factory.mktemp("slim-wheels")
    for wheel in sorted(full_wheelhouse.glob("*.whl")):
        if wheel.name.startswith(SLIM_PREFIXES):
            os.symlink(wheel, slim / wheel.name)
    assert len(list(slim.glob("*.whl"))) == len(SLIM_PREFIXES)
    return slim


def bundle_factory(
    release_key: SigningKey, keyring: Keyring, project_wheel: Path, house: Path
) -> BundleFactory:
    def build(out: Path, **overrides: object) -> BuiltBundle:
        fields: dict[str, object] = {
            "project_wheel": project_wheel,
            "wheelhouse": house,
            "models_dir": MODELS,
            "platform": Platform.X86_64,
            "signing_key": release_key,
            "keyring": keyring,
            "counter": 100,
            "issued_at": EPOCH,
            "expires_at": EPOCH + DEFAULT_LIFETIME_S,
        }
        fields.update(overrides)
        return assemble(BuildRequest(**fields), out)  # type: ignore[arg-type]

    return build


@pytest.fixture(scope="session")
def slim_bundle(
    release_key: SigningKey, keyring: Keyring, project_wheel: Path, slim_wheelhouse: Path
) -> BundleFactory:
    return bundle_factory(release_key, keyring, project_wheel, slim_wheelhouse)


def read_members(bundle: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with bundle.open("rb") as handle:
        raw = zstandard.ZstdDecompressor().stream_reader(handle).read()
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        return [(m, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]


def write_members(bundle: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    """Re-pack members as they are (used to tamper with one byte of one member)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    bundle.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(buffer.getvalue()))


def tree_snapshot(root: Path) -> dict[str, bytes]:
    """Every path under ``root`` with its content (directories as b'<dir>')."""
    snapshot: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        snapshot[key] = b"<dir>" if path.is_dir() else path.read_bytes()
    return snapshot


@pytest.fixture(scope="session")
def default_slim(
    tmp_path_factory: pytest.TempPathFactory, slim_bundle: BundleFactory
) -> BuiltBundle:
    """One slim bundle (counter 100) for the tests that only read or damage it."""
    return slim_bundle(tmp_path_factory.mktemp("default-slim"))


@pytest.fixture
def bundle_copy(tmp_path: Path, default_slim: BuiltBundle) -> Path:
    """A private copy of the default slim bundle, free to damage."""
    copy = tmp_path / "out" / default_slim.path.name
    copy.parent.mkdir()
    shutil.copyfile(default_slim.path, copy)
    return copy
