"""The appliance's own wheel, built reproducibly from a source tree or a git commit.

The tree is copied (or taken from ``git archive``) with normalised modes, so a
checkout's umask or stray build directories never reach the wheel; setuptools
and wheel are pinned for the isolated build (``--build-constraint``), and
SOURCE_DATE_EPOCH fixes the wheel's zip timestamps.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from image_build.errors import BuildError

__all__ = ["BUILD_CONSTRAINTS", "build_project_wheel", "commit_time", "export_commit"]

BUILD_CONSTRAINTS = "setuptools==84.2.1\nwheel==0.48.0\n"
# what a wheel is built from; tests, docs, bench and examples stay out
_SOURCE_ENTRIES = (
    "pyproject.toml", "README.md", "appliance", "sync", "cloud_ingest", "image_build", "yardlink",
)  # fmt: skip


def commit_time(checkout: Path, commit: str = "HEAD") -> int:
    return int(_git(checkout, "log", "-1", "--format=%ct", commit).strip())


def export_commit(checkout: Path, commit: str, dest: Path) -> None:
    """The files of ``commit`` (not the work tree) into ``dest``, modes normalised."""
    archive = subprocess.run(
        ["git", "-C", str(checkout), "archive", "--format=tar", commit, *_SOURCE_ENTRIES],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise BuildError(f"git archive {commit} failed: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    _normalise_modes(dest)


def copy_tree(source: Path, dest: Path) -> None:
    """A source directory's wheel inputs into ``dest`` (for builds of a modified tree)."""
    for entry in _SOURCE_ENTRIES:
        origin = source / entry
        if origin.is_dir():
            shutil.copytree(
                origin, dest / entry, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        elif origin.is_file():
            shutil.copyfile(origin, dest / entry)
    _normalise_modes(dest)


def build_project_wheel(tree: Path, out_dir: Path, *, source_date_epoch: int) -> Path:
    """``pip wheel --no-deps`` of ``tree``; returns the wheel's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="yardlink-wheel-") as tmp:
        constraints = Path(tmp) / "build-constraints.txt"
        constraints.write_text(BUILD_CONSTRAINTS)
        built = Path(tmp) / "out"
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(source_date_epoch)}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--disable-pip-version-check",
                "--build-constraint",
                str(constraints),
                "-w",
                str(built),
                str(tree),
            ],  # fmt: skip
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-5:])
            raise BuildError(f"building the yardlink wheel failed: {tail}")
        wheels = sorted(built.glob("yardlink-*.whl"))
        if len(wheels) != 1:
            raise BuildError(f"expected one yardlink wheel, pip made {[w.name for w in wheels]}")
        target = out_dir / wheels[0].name
        shutil.move(wheels[0], target)
    return target


def _normalise_modes(root: Path) -> None:
    os.chmod(root, 0o755)
    for directory, subdirs, files in os.walk(root):
        for name in subdirs:
            os.chmod(Path(directory) / name, 0o755)
        for name in files:
            path = Path(directory) / name
            os.chmod(path, 0o755 if os.stat(path).st_mode & 0o111 else 0o644)


def _git(checkout: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(checkout), *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BuildError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout
