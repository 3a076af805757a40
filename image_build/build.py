"""Building a signed, byte-reproducible bundle ``yardlink-<version>-<platform>.tar.zst``.

``assemble`` is the core: given the project wheel, a wheelhouse, the model
directory and a key, it hashes every file, signs the manifest and packs the
tar.  ``build_from_checkout`` prepares those inputs from a git commit (the
wheel) and pip (the wheelhouse, cached).  A signed copy of the manifest is also
written beside the bundle, for a release page or a fleet server to read.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from appliance.inference.model_files import MODEL_FILES
from appliance.inference.model_fold import FOLDS, folded_path
from appliance.inference.quantize import DET_INT8_MODEL, DET_INT8_RECORD, int8_detector_path
from image_build.errors import BuildError
from image_build.manifest import MANIFEST_MEMBER, BundleManifest
from image_build.packing import MemberSource, pack
from image_build.platforms import PYTHON_VERSION, Platform
from image_build.source import build_project_wheel, commit_time, export_commit
from image_build.wheelhouse import runtime_requirements, wheelhouse
from sync.shared.durable_file import fsync_directory
from sync.shared.signing import Envelope, FileDigest, Keyring, SignedHeader, SigningKey

__all__ = [
    "DEFAULT_LIFETIME_S",
    "UNIT_FILES",
    "BuildRequest",
    "BuiltBundle",
    "assemble",
    "build_from_checkout",
    "bundle_name",
    "keyring_envelope",
    "unit_template",
]

DEFAULT_LIFETIME_S = 365 * 24 * 3600  # a bundle left on a shelf longer is refused (signed expiry)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BuildRequest:
    project_wheel: Path
    wheelhouse: Path  # dependency wheels for ``platform`` (the project wheel may be there too)
    models_dir: Path
    platform: Platform
    signing_key: SigningKey
    keyring: Keyring  # the release keys a gateway trusts after this install
    counter: int  # the release counter; higher = newer (default: SOURCE_DATE_EPOCH)
    issued_at: int
    expires_at: int
    rollback: bool = False  # signed permission to replace a newer release
    site_config: Path | None = None  # default: the template shipped in image_build
    ca_bundle: Path | None = None  # the cloud's CA certificates, when it uses a private CA
    extra_files: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class BuiltBundle:
    path: Path
    manifest_path: Path
    sha256: str
    size: int
    payload_bytes: int  # sum of the wheels and models in it
    manifest: BundleManifest


def bundle_name(version: str, platform: Platform) -> str:
    return f"yardlink-{version}-{platform.value}.tar.zst"


UNIT_FILES = ("yardlink@.service", "yardlink-slot-generator")  # under systemd/ in a bundle


def unit_template(name: str = "yardlink@.service") -> bytes:
    return resources.files("image_build").joinpath(f"data/{name}").read_bytes()


def _site_template() -> bytes:
    return resources.files("image_build").joinpath("data/site.toml").read_bytes()


def keyring_envelope(keyring: Keyring, key: SigningKey) -> bytes:
    """The keyring a gateway will trust, signed by the release key (for rotation)."""
    return Envelope.sign(keyring.signed_document(), [key]).to_bytes()


def _wheel_version(wheel: Path) -> str:
    parts = wheel.name.split("-")
    if len(parts) < 5 or parts[0] != "yardlink":
        raise BuildError(f"{wheel.name} is not a yardlink wheel")
    return parts[1]


def _sha256(source: Path | bytes) -> FileDigest:
    if isinstance(source, bytes):
        return FileDigest(len(source), hashlib.sha256(source).hexdigest())
    digest, size = hashlib.sha256(), 0
    with source.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FileDigest(size, digest.hexdigest())


def _members(request: BuildRequest) -> dict[str, Path | bytes]:
    members: dict[str, Path | bytes] = {}
    wheels = {w.name: w for w in request.wheelhouse.glob("*.whl")}
    wheels = {name: path for name, path in wheels.items() if not name.startswith("yardlink-")}
    wheels[request.project_wheel.name] = request.project_wheel
    for name, path in wheels.items():
        members[f"wheels/{name}"] = path
    for spec in MODEL_FILES:
        path = request.models_dir / spec.name
        if not path.is_file():
            raise BuildError(f"model file {path} is missing (run 'make models')")
        if _sha256(path).sha256 != spec.sha256:
            raise BuildError(f"model file {path} is not the pinned one (sha256 differs)")
        members[f"models/{spec.name}"] = path
    int8_detector = int8_detector_path(request.models_dir)  # made by 'make models'
    if int8_detector is not None:  # without it the gateway runs the FP32 detector
        members[f"models/{DET_INT8_MODEL}"] = int8_detector
        members[f"models/{DET_INT8_RECORD}"] = request.models_dir / DET_INT8_RECORD
    for fold in FOLDS:  # the folded files 'make models' made: fewer passes a read
        folded = folded_path(fold, request.models_dir)
        if folded is not None:
            members[f"models/{fold.folded}"] = folded
            members[f"models/{fold.record}"] = request.models_dir / fold.record
    for name in UNIT_FILES:
        members[f"systemd/{name}"] = unit_template(name)
    members["config/site.toml"] = (
        request.site_config.read_bytes() if request.site_config else _site_template()
    )
    members["keys/keyring.json"] = keyring_envelope(request.keyring, request.signing_key)
    if request.ca_bundle is not None:
        members["ca/cloud-ca.pem"] = request.ca_bundle.read_bytes()
    for name, path in request.extra_files.items():
        members[name] = path
    return members


def assemble(request: BuildRequest, out_dir: Path) -> BuiltBundle:
    """Hash, sign and pack; the bundle appears under its final name only when whole."""
    version = _wheel_version(request.project_wheel)
    members = _members(request)
    digests = {name: _sha256(source) for name, source in sorted(members.items())}
    document = BundleManifest.signed_document(
        version=version,
        platform=request.platform,
        python=PYTHON_VERSION,
        files=digests,
        counter=request.counter,
        issued_at=request.issued_at,
        expires_at=request.expires_at,
        rollback=request.rollback,
    )
    envelope = Envelope.sign(document, [request.signing_key])
    envelope_bytes = envelope.to_bytes()
    ordered: list[MemberSource] = [(MANIFEST_MEMBER, envelope_bytes)]
    ordered += [(name, members[name]) for name in sorted(members)]
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / bundle_name(version, request.platform)
    descriptor, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=out_dir)
    try:
        with os.fdopen(descriptor, "wb") as out:
            pack(out, ordered, mtime=request.issued_at)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    manifest_path = target.with_name(target.name.removesuffix(".tar.zst") + ".manifest.json")
    manifest_path.write_bytes(envelope_bytes)
    fsync_directory(out_dir)
    whole = _sha256(target)
    payload = sum(d.size for n, d in digests.items() if n.startswith(("wheels/", "models/")))
    header = SignedHeader.read(document, subject_field="name")
    manifest = BundleManifest.from_signed(document, header)
    return BuiltBundle(target, manifest_path, whole.sha256, whole.size, payload, manifest)


def build_from_checkout(
    checkout: Path,
    out_dir: Path,
    *,
    platform: Platform,
    signing_key: SigningKey,
    keyring: Keyring,
    commit: str = "HEAD",
    models_dir: Path | None = None,
    source_date_epoch: int | None = None,
    counter: int | None = None,
    lifetime_s: int = DEFAULT_LIFETIME_S,
    rollback: bool = False,
    site_config: Path | None = None,
    ca_bundle: Path | None = None,
    wheelhouse_dir: Path | None = None,
) -> BuiltBundle:
    """Build the bundle of ``commit`` of a git checkout (the work tree is not read).

    ``wheelhouse_dir`` replaces the downloaded dependency wheels (tests use a few)."""
    epoch = source_date_epoch if source_date_epoch is not None else _epoch(checkout, commit)
    with tempfile.TemporaryDirectory(prefix="yardlink-build-") as tmp:
        tree = Path(tmp) / "src"
        tree.mkdir()
        export_commit(checkout, commit, tree)
        wheel = build_project_wheel(tree, Path(tmp) / "dist", source_date_epoch=epoch)
        house = wheelhouse_dir or wheelhouse(
            platform, runtime_requirements(tree / "pyproject.toml")
        )
        request = BuildRequest(
            project_wheel=wheel,
            wheelhouse=house,
            models_dir=models_dir or checkout / "models",
            platform=platform,
            signing_key=signing_key,
            keyring=keyring,
            counter=epoch if counter is None else counter,
            issued_at=epoch,
            expires_at=epoch + lifetime_s,
            rollback=rollback,
            site_config=site_config,
            ca_bundle=ca_bundle,
        )
        return assemble(request, out_dir)


def _epoch(checkout: Path, commit: str) -> int:
    configured = os.environ.get("SOURCE_DATE_EPOCH")
    return int(configured) if configured else commit_time(checkout, commit)
