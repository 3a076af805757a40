"""Release tooling on an operator's machine: build a release archive, sign it, verify it.

``build_release`` loads the model files with the real runtime, runs them on the
golden frames and records what they find (the golden outputs the appliance must
reproduce) with a validation report; ``sign_release`` writes the signed
manifest; ``verify_release`` runs every check the appliance runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.inference.face_anonymize import FACE_MODEL
from appliance.inference.gate_ocr import DET_MODEL, REC_MODEL
from appliance.inference.settings import InferenceSettings
from appliance.sources.synthetic import SyntheticYardCamera
from appliance.updates.contents import (
    CONTENTS_FILE,
    VALIDATION_FILE,
    GoldenCase,
    ReleaseContents,
    load_contents,
    parse_contents,
)
from appliance.updates.derived_members import check_derived, derived_members
from appliance.updates.errors import ReleaseError
from appliance.updates.release_tasks import (
    close_task,
    expected_detections,
    files_in_use,
    load_release_task,
    read_golden_frame,
    sla_ms,
    validate_golden,
)
from sync.protocol.releases import (
    ArtifactInfo,
    ReleaseFile,
    ReleaseManifest,
    RolloutPlan,
    VerifiedRelease,
    sign_manifest,
    verify_manifest,
)
from sync.shared.durable_file import replace_durably
from sync.shared.signing import (
    FileDigest,
    Keyring,
    SigningKey,
    TimeFloor,
    digest_archive,
    extract_archive,
    verify_file,
)

__all__ = ["DEFAULT_MODEL_FILES", "Build", "build_release", "sign_release", "verify_release"]

# The pinned file name of each role, looked up in MODEL_DIR unless given.
DEFAULT_MODEL_FILES: dict[str, dict[str, str]] = {
    "gate_ocr": {"det": DET_MODEL, "rec": REC_MODEL},
    "face_anonymize": {"face": FACE_MODEL},
}
_RUNTIMES = {"gate_ocr": "onnxruntime", "face_anonymize": "litert"}


@dataclass(frozen=True)
class Build:
    archive: Path
    contents: ReleaseContents
    report: dict[str, Any]


def build_release(
    model_dir: Path,
    *,
    name: str,
    version: str,
    task: str,
    device_classes: Sequence[str],
    out: Path,
    golden_frames: int = 3,
    golden_seed: int = 1,
    model_files: dict[str, str] | None = None,
    inference: InferenceSettings | None = None,
    derived: bool = True,
) -> Build:
    """Write ``out``: model files (with their derived files and records unless not
    ``derived``), golden frames with the outputs the files that will run give on them
    (real runtime), the validation report and ``release.json``."""
    if task not in DEFAULT_MODEL_FILES:
        raise ReleaseError(f"unknown task {task!r} (known: {', '.join(DEFAULT_MODEL_FILES)})")
    roles = {**DEFAULT_MODEL_FILES[task], **(model_files or {})}
    files: dict[str, Path] = {}  # name under model/ -> the file on this machine
    for role, file_name in roles.items():
        path = model_dir / file_name
        if not path.is_file():
            raise ReleaseError(f"model file for role {role!r} not found: {path}")
        files[path.name] = path
    shipped = derived_members(files, model_dir) if derived else {}
    members = {f"model/{name}": path.read_bytes() for name, path in {**files, **shipped}.items()}
    camera = SyntheticYardCamera(seed=golden_seed)
    frames = camera.frames(golden_frames)
    for index, frame in enumerate(frames):
        members[f"golden/{index:03d}.png"] = frame.encode(".png")
    try:
        draft = _draft(name, version, task, device_classes, roles, len(frames))
    except ValueError as exc:  # pydantic's ValidationError is one
        raise ReleaseError(f"bad release fields: {exc}") from None
    settings = inference or InferenceSettings()
    with tempfile.TemporaryDirectory(prefix="yardlink-release-") as tmp:
        root = Path(tmp)
        for member, data in members.items():
            (root / member).parent.mkdir(parents=True, exist_ok=True)
            (root / member).write_bytes(data)
        loaded = load_release_task(draft, root, settings)
        try:
            golden = []
            found = wanted = 0
            for case, frame in zip(draft.golden, frames, strict=True):
                result = loaded.run(read_golden_frame(root / case.input))
                golden.append(GoldenCase(input=case.input, expected=expected_detections(result)))
                values = {d.value for d in result.detections}
                wanted += len(frame.truths)
                found += sum(t.value in values for t in frame.truths)
            contents = draft.model_copy(update={"golden": golden})
            # Latency is the device's to judge (its own budget, its own hardware); here
            # it is only reported.
            timing = validate_golden(loaded, contents, root, float("inf"), latency_runs=1)
            runs = files_in_use(loaded, root)
        finally:
            close_task(loaded)
    report = {
        "task": task,
        "golden_cases": len(golden),
        "synthetic_seed": golden_seed,
        "truths": wanted,
        "truths_found": found,
        "recall": round(found / wanted, 4) if wanted else None,
        "worst_median_ms": round(timing.worst_median_ms, 1),
        "device_budget_ms": sla_ms(settings, task),
        "derived_files": sorted(f"model/{name}" for name in shipped),
        "runs": runs,  # the files the golden outputs came from (this machine's settings)
    }
    members[CONTENTS_FILE] = contents.dump()
    members[VALIDATION_FILE] = json.dumps(report, indent=2, sort_keys=True).encode() + b"\n"
    _write_tar(out, members)
    return Build(archive=out, contents=contents, report=report)


def _draft(
    name: str,
    version: str,
    task: str,
    device_classes: Sequence[str],
    roles: dict[str, str],
    cases: int,
) -> ReleaseContents:
    return ReleaseContents(
        name=name,
        version=version,
        task=task,
        runtime=_RUNTIMES[task],  # type: ignore[arg-type]
        device_classes=list(device_classes),
        models={role: f"model/{Path(f).name}" for role, f in roles.items()},
        golden=[GoldenCase(input=f"golden/{i:03d}.png", expected=[]) for i in range(cases)],
    )


def _write_tar(out: Path, members: dict[str, bytes]) -> None:
    """A reproducible tar: sorted names, mtime 0, root-owned, mode 0644."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(members[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(members[name]))
    replace_durably(out, buffer.getvalue())


def sign_release(
    archive: Path,
    keys: Sequence[SigningKey],
    *,
    counter: int,
    issued_at: int,
    expires_in_s: int,
    rollout: RolloutPlan | None = None,
    rollback: bool = False,
    notes: str = "",
) -> tuple[ReleaseManifest, bytes]:
    """The manifest of ``archive`` and its signed envelope bytes.  ``issued_at`` is the
    operator's time (the signer is the authority on time; devices never use theirs)."""
    files = digest_archive(archive)
    if CONTENTS_FILE not in files:
        raise ReleaseError(f"{archive} has no {CONTENTS_FILE}: build it with 'models package'")
    whole = _digest_of(archive)
    with tarfile.open(archive, mode="r:") as tar:  # members were checked by digest_archive
        source = tar.extractfile(CONTENTS_FILE)
        if source is None:
            raise ReleaseError(f"{archive}: {CONTENTS_FILE} is not a file")
        with source:
            contents = parse_contents(source.read(1 << 20), where=f"{archive}:{CONTENTS_FILE}")
    manifest = ReleaseManifest(
        name=contents.name,
        version=contents.version,
        counter=counter,
        rollback=rollback,
        task=contents.task,
        runtime=contents.runtime,
        device_classes=contents.device_classes,
        artifact=ArtifactInfo(sha256=whole.sha256, size=whole.size),
        files=[ReleaseFile(path=p, sha256=d.sha256, size=d.size) for p, d in sorted(files.items())],
        rollout=rollout or RolloutPlan(),
        issued_at=issued_at,
        expires_at=issued_at + expires_in_s,
        notes=notes,
    )
    return manifest, sign_manifest(manifest, list(keys)).to_bytes()


def _digest_of(path: Path) -> FileDigest:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return FileDigest(size=path.stat().st_size, sha256=digest.hexdigest())


def verify_release(
    archive: Path,
    manifest: bytes,
    keyring: Keyring,
    *,
    device_class: str,
    floor: TimeFloor | None = None,
    active_counter: int | None = None,
) -> VerifiedRelease:
    """Every check the appliance makes before staging, in its order, then the derived
    files' records (``ReleaseValidationFailed``, check ``derived``)."""
    verified = verify_manifest(
        manifest,
        keyring,
        floor or TimeFloor(),
        device_class=device_class,
        active_counter=active_counter,
    )
    verify_file(archive, verified.manifest.artifact.digest())
    with tempfile.TemporaryDirectory(prefix="yardlink-verify-") as tmp:
        extract_archive(archive, Path(tmp), verified.manifest.file_digests())
        contents = load_contents(Path(tmp))
        for directory in {(Path(tmp) / path).parent for path in contents.models.values()}:
            check_derived(directory)  # the check a device makes before loading
    return verified
