"""Helpers of the image tests: building slim or full bundles, reading and damaging them.

Kept out of conftest.py so that tests import them from a plain module.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import zstandard

from image_build.build import DEFAULT_LIFETIME_S, BuildRequest, BuiltBundle, assemble
from image_build.platforms import Platform
from sync.shared.signing import Keyring, SigningKey

CHECKOUT = Path(__file__).resolve().parents[2]
MODELS = CHECKOUT / "models"
SLIM_PREFIXES = ("pip-", "idna-", "attrs-", "aiosqlite-")
EPOCH = 1_780_000_000  # the signed time of the test bundles

BundleFactory = Callable[..., BuiltBundle]


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


def read_members(bundle: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with bundle.open("rb") as handle:
        raw = zstandard.ZstdDecompressor().stream_reader(handle).read()
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        return [(m, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]


def member(bundle: Path, name: str) -> bytes:
    """One member's bytes (``keys/keyring.json`` is the trust file of an install)."""
    return {info.name: data for info, data in read_members(bundle)}[name]


def change_member(bundle: Path, index: int, change: Callable[[bytes], bytes]) -> None:
    """Re-pack ``bundle`` with member ``index`` (0: the signed manifest) put through ``change``."""
    members = read_members(bundle)
    info, data = members[index]
    members[index] = (info, change(data))
    write_members(bundle, members)


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
