"""Shared inputs of the image tests: a release key, the project wheel of HEAD, wheelhouses.

The full wheelhouse (every runtime dependency for x86_64) is downloaded once
into ``~/.cache/yardlink-wheelhouse`` and reused by later runs; the fast tests
pack a slim wheelhouse (a few pure-Python wheels and pip) so that a build takes
seconds, and the slow tests the full one.  Helpers live in ``bundle_kit``.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from image_build.build import BuiltBundle
from image_build.platforms import Platform
from image_build.source import build_project_wheel, commit_time, export_commit
from image_build.wheelhouse import runtime_requirements, wheelhouse
from sync.shared.signing import Keyring, SigningKey
from tests.image_build._harness import FullReleases, release_set
from tests.image_build.bundle_kit import CHECKOUT, SLIM_PREFIXES, BundleFactory, bundle_factory


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


@pytest.fixture(scope="session")
def slim_bundle(
    release_key: SigningKey, keyring: Keyring, project_wheel: Path, slim_wheelhouse: Path
) -> BundleFactory:
    return bundle_factory(release_key, keyring, project_wheel, slim_wheelhouse)


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


@pytest.fixture(scope="session")
def full_releases(
    release_key: SigningKey,
    keyring: Keyring,
    project_wheel: Path,
    full_wheelhouse: Path,
    source_tree: Path,
) -> FullReleases:
    """``(work, site) -> {"v1", "v2", "broken"}``: full bundles of :func:`release_set`."""
    return functools.partial(
        release_set,
        release_key=release_key,
        keyring=keyring,
        project_wheel=project_wheel,
        wheelhouse=full_wheelhouse,
        source_tree=source_tree,
    )
