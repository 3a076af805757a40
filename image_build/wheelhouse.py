"""The offline wheelhouse: every runtime dependency as a wheel for the target platform.

``pip download --only-binary=:all: --platform ... --python-version 3.11`` works
for any target from this machine (an aarch64 wheelhouse is built on x86_64).
Downloads are cached under ``~/.cache/yardlink-wheelhouse/<platform>-<key>``,
keyed by the platform, the Python version and the exact requirement lines, and
filled once (a temp directory renamed into place when pip succeeded).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from image_build.errors import BuildError
from image_build.platforms import PYTHON_VERSION, Platform, pip_platform_tags

__all__ = ["BOOTSTRAP_REQUIREMENTS", "cache_root", "runtime_requirements", "wheelhouse"]

# pip itself rides in the wheelhouse: the installer runs it from its wheel to fill a
# slot's venv, so a gateway needs no pip (nor network) of its own
BOOTSTRAP_REQUIREMENTS = ("pip==26.3",)


def cache_root() -> Path:
    configured = os.environ.get("YARDLINK_WHEELHOUSE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "yardlink-wheelhouse"


def runtime_requirements(pyproject: Path) -> list[str]:
    """The ``[project] dependencies`` of a source tree, plus the bootstrap pins."""
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        dependencies = list(project["dependencies"])
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise BuildError(f"cannot read the dependencies of {pyproject}: {exc}") from exc
    return sorted({*dependencies, *BOOTSTRAP_REQUIREMENTS})


def wheelhouse(target: Platform, requirements: list[str], *, cache: Path | None = None) -> Path:
    """A directory of wheels for ``target`` that satisfies ``requirements`` (cached)."""
    key_source = "\n".join([target.value, PYTHON_VERSION, *sorted(requirements)])
    key = hashlib.sha256(key_source.encode()).hexdigest()[:16]
    root = cache or cache_root()
    final = root / f"{target.value}-py{PYTHON_VERSION}-{key}"
    if (final / ".complete").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmp:
        staging = Path(tmp) / "wheels"
        _download(target, requirements, staging)
        (staging / "requirements.txt").write_text("\n".join(requirements) + "\n")
        (staging / ".complete").write_text("")
        try:
            staging.rename(final)
        except OSError:  # another run filled it meanwhile
            if not (final / ".complete").is_file():
                shutil.rmtree(final, ignore_errors=True)
                staging.rename(final)
    return final


def _download(target: Platform, requirements: list[str], dest: Path) -> None:
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--only-binary=:all:", "--implementation", "cp", "--abi", _abi_tag(),
        "--python-version", PYTHON_VERSION, "-d", str(dest),
    ]  # fmt: skip
    for tag in pip_platform_tags(target):
        command += ["--platform", tag]
    result = subprocess.run([*command, *requirements], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-3:])
        raise BuildError(f"pip could not download the {target.value} wheels: {tail}")


def _abi_tag() -> str:
    return "cp" + PYTHON_VERSION.replace(".", "")
