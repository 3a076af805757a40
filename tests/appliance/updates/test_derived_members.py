"""Derived model files (INT8, folded) in a release: packed, signed, checked, and run.

Everything over the real files of ``models/`` (``make models`` made the derived ones)
and keys made here: a release built by default carries them, the device runs them and
says so; one altered after signing is refused at staging; one signed but not vouched
for by its record fails the release (never loaded, never silently replaced).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from appliance.inference.model_fold import DET_INT8_FOLD, REC_FOLD
from appliance.inference.quantize import DET_FP32_MODEL, DET_INT8_MODEL, DET_INT8_RECORD
from appliance.inference.settings import GateOcrSettings, InferenceSettings
from appliance.updates.derived_members import DERIVATIONS
from appliance.updates.errors import ReleaseError, ReleaseValidationFailed
from appliance.updates.package import _write_tar, build_release, sign_release, verify_release
from appliance.updates.release_tasks import files_in_use
from appliance.updates.slot_state import SlotStatus
from sync.outbox import Outbox
from sync.protocol.releases import ArtifactInfo, ReleaseManifest, sign_manifest
from sync.shared.signing import Envelope, HashMismatch
from tests.appliance.inference.retrained import write_retrained
from tests.appliance.updates.agent_harness import audit_bodies, make_agent
from tests.support.releases import DEVICE_CLASS, MODELS_DIR, ReleaseKit
from yardlink.cli import main

DERIVED = sorted({name for d in DERIVATIONS for name in (d.derived, d.record)})


def _members(archive: Path) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            source = tar.extractfile(member)
            assert source is not None
            members[member.name] = source.read()
    return members


def _report(archive: Path) -> dict[str, object]:
    report: dict[str, object] = json.loads(_members(archive)["validation.json"])
    return report


# ------------------------------------------------------------------ the good path


async def test_a_release_carries_the_derived_files_and_the_device_runs_them(
    release_kit: ReleaseKit, tmp_path: Path, outbox: Outbox
):
    manifest = release_kit.sign(counter=2)
    signed = {f["path"] for f in Envelope.parse(manifest).signed["files"]}
    assert {f"model/{name}" for name in DERIVED} <= signed  # each one a signed member
    report = _report(release_kit.build.archive)
    assert report["derived_files"] == [f"model/{name}" for name in DERIVED]

    agent = make_agent(tmp_path, release_kit.keyring, outbox)  # this machine's settings
    await agent.start()
    candidate = await agent.install(release_kit.build.archive, manifest)
    slot_dir = agent.store.slot_dir("gate_ocr", candidate.slot)
    runs = files_in_use(candidate.task, slot_dir)
    # The recognizer runs folded whatever the CPU; the detector as det_model picks.
    assert f"model/{REC_FOLD.folded}" in runs
    # The golden outputs were recorded with the files the device validates and serves.
    assert report["runs"] == runs
    staged = next(b for b in audit_bodies(outbox) if b["action"] == "model.staged")
    assert staged["detail"]["runs"] == runs


async def test_a_device_set_to_int8_runs_the_releases_int8_detector(
    release_kit: ReleaseKit, tmp_path: Path, outbox: Outbox
):
    """Whatever the CPU: ``det_model = "int8"`` needs the INT8 file, which only the
    release's derived members provide (without them the load fails)."""
    int8 = GateOcrSettings(sla_p99_ms=30_000, det_model="int8")
    agent = make_agent(
        tmp_path, release_kit.keyring, outbox, inference=InferenceSettings(gate_ocr=int8)
    )
    await agent.start()
    candidate = await agent.install(release_kit.build.archive, release_kit.sign(counter=2))
    runs = files_in_use(candidate.task, agent.store.slot_dir("gate_ocr", candidate.slot))
    assert runs == [f"model/{DET_INT8_FOLD.folded}", f"model/{REC_FOLD.folded}"]


# ------------------------------------------------------------------ altered after signing


@pytest.mark.parametrize("member", [DET_INT8_MODEL, REC_FOLD.record])
async def test_a_derived_member_altered_after_signing_is_refused_at_staging(
    release_kit: ReleaseKit, tmp_path: Path, outbox: Outbox, member: str
):
    members = _members(release_kit.build.archive)
    data = bytearray(members[f"model/{member}"])
    data[len(data) // 2] ^= 0x01
    members[f"model/{member}"] = bytes(data)
    archive = tmp_path / "altered.tar"
    _write_tar(archive, members)
    # The signed manifest of the real release; only its artifact digest follows the
    # altered tar (as if that had been signed too): the member check must catch it.
    whole = archive.read_bytes()
    signed = ReleaseManifest.model_validate(Envelope.parse(release_kit.sign(counter=2)).signed)
    manifest = sign_manifest(
        signed.model_copy(
            update={
                "artifact": ArtifactInfo(sha256=hashlib.sha256(whole).hexdigest(), size=len(whole))
            }
        ),
        [release_kit.key],
    ).to_bytes()
    agent = make_agent(tmp_path, release_kit.keyring, outbox)
    await agent.start()
    with pytest.raises(HashMismatch, match=member):
        await agent.install(archive, manifest)
    assert agent.state.task("gate_ocr").slots["a"].status is SlotStatus.FAILED
    assert agent.serving("gate_ocr") == (None, None)
    assert audit_bodies(outbox)[-1]["detail"]["check"] == "sha256"


# ------------------------------------------------------------------ signed, but not vouched for


def _edit_record(members: dict[str, bytes]) -> None:
    name = f"model/{REC_FOLD.record}"
    record = json.loads(members[name])
    record["recipe"] = {**record["recipe"], "edited": "by hand"}
    members[name] = json.dumps(record).encode()


def _swap_int8(members: dict[str, bytes]) -> None:  # a loadable detector, not the vouched one
    members[f"model/{DET_INT8_MODEL}"] = members[f"model/{DET_FP32_MODEL}"]


def _other_source(members: dict[str, bytes]) -> None:  # INT8 file kept, its source replaced
    members[f"model/{DET_FP32_MODEL}"] = members[f"model/{DET_INT8_MODEL}"]


def _signed_release(kit: ReleaseKit, out: Path, change: object) -> tuple[Path, bytes]:
    """The real release with ``change`` made to its members, then signed with the release
    tooling: the signature holds, so only the derived files' check can refuse it."""
    members = _members(kit.build.archive)
    change(members)  # type: ignore[operator]
    _write_tar(out, members)
    _, manifest = sign_release(
        out, [kit.key], counter=2, issued_at=kit.issued_at, expires_in_s=86_400
    )
    return out, manifest


@pytest.mark.parametrize(
    ("change", "named", "why"),
    [
        (_swap_int8, DET_INT8_MODEL, "does not vouch"),
        (_edit_record, REC_FOLD.folded, "does not vouch"),
        (_other_source, DET_INT8_MODEL, f"not derived from this {DET_FP32_MODEL}"),
    ],
    ids=["derived-file", "record", "other-source"],
)
async def test_a_signed_derived_file_its_record_does_not_vouch_for_fails_the_release(
    release_kit: ReleaseKit, tmp_path: Path, outbox: Outbox, change: object, named: str, why: str
):
    archive, manifest = _signed_release(release_kit, tmp_path / "release.tar", change)
    agent = make_agent(tmp_path, release_kit.keyring, outbox)
    await agent.start()
    with pytest.raises(ReleaseValidationFailed, match=why) as caught:
        await agent.install(archive, manifest)
    assert caught.value.check == "derived" and named in str(caught.value)
    slots = agent.state.task("gate_ocr")
    assert slots.slots["a"].status is SlotStatus.FAILED and agent.serving("gate_ocr") == (
        None,
        None,
    )
    assert slots.last_outcome is not None
    assert (slots.last_outcome.result, slots.last_outcome.check) == ("validation_failed", "derived")
    body = audit_bodies(outbox)[-1]
    assert body["action"] == "model.validation_failed" and body["detail"]["check"] == "derived"
    # The operator's offline verify makes the same check.
    with pytest.raises(ReleaseValidationFailed, match=why):
        verify_release(archive, manifest, release_kit.keyring, device_class=DEVICE_CLASS)


def test_models_verify_refuses_a_release_whose_record_does_not_vouch(
    release_kit: ReleaseKit, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    archive, manifest = _signed_release(release_kit, tmp_path / "release.tar", _edit_record)
    (tmp_path / "m.json").write_bytes(manifest)
    keyring = tmp_path / "keyring.json"
    keyring.write_bytes(
        Envelope.sign(release_kit.keyring.signed_document(), [release_kit.key]).to_bytes()
    )
    argv = ["models", "verify", str(archive), "--manifest", str(tmp_path / "m.json")]
    assert main([*argv, "--keyring", str(keyring), "--device-class", DEVICE_CLASS]) == 3
    err = capsys.readouterr().err
    assert err.startswith("refused (derived): ") and REC_FOLD.record in err


# ------------------------------------------------------------------ packaging


def _model_dir(root: Path, names: list[str]) -> Path:
    """A model directory of links to the real files ``names``."""
    root.mkdir()
    for name in names:
        (root / name).symlink_to(MODELS_DIR / name)
    return root


def test_packaging_refuses_a_derived_file_its_record_does_not_vouch_for(tmp_path: Path):
    model_dir = _model_dir(tmp_path / "models", [DET_FP32_MODEL, REC_FOLD.source, *DERIVED])
    record = model_dir / DET_INT8_RECORD
    edited = json.loads(record.read_text())
    edited["source_sha256"] = "0" * 64
    record.unlink()
    record.write_text(json.dumps(edited))
    with pytest.raises(ReleaseError, match=f"{DET_INT8_RECORD} does not vouch") as caught:
        build_release(
            model_dir,
            name="gate-ocr",
            version="v2",
            task="gate_ocr",
            device_classes=[DEVICE_CLASS],
            out=tmp_path / "never.tar",
        )
    assert "yardlink models quantize" in str(caught.value)
    assert not (tmp_path / "never.tar").exists()


def test_packaging_without_derived_files_needs_saying_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    model_dir = _model_dir(tmp_path / "models", [DET_FP32_MODEL, REC_FOLD.source])
    out = tmp_path / "release.tar"
    argv = ["models", "package", str(model_dir), "--name", "gate-ocr", "--version", "v2"]
    argv += ["--device-class", DEVICE_CLASS, "--golden-frames", "1", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{DET_INT8_MODEL} is missing" in err
    assert "--no-derived" in err and not out.exists()

    assert main([*argv, "--no-derived"]) == 0
    assert "derived files carried: none" in capsys.readouterr().err  # the log says what runs
    assert not {f"model/{name}" for name in DERIVED} & set(_members(out))
    assert _report(out)["runs"] == [f"model/{DET_FP32_MODEL}", f"model/{REC_FOLD.source}"]


def test_a_retrained_recognizer_ships_with_the_folded_file_derived_from_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """A retrained recognizer beside the pinned folded file: packaging refuses it (not
    derived from this recognizer); ``models quantize`` folds this one; the release then
    carries the folded file made from it, and the device's check accepts it."""
    model_dir = _model_dir(tmp_path / "models", [DET_FP32_MODEL, *DERIVED])
    retrained = write_retrained(REC_FOLD.source, model_dir)
    out = tmp_path / "release.tar"
    argv = ["models", "package", str(model_dir), "--name", "gate-ocr", "--version", "v2"]
    argv += ["--device-class", DEVICE_CLASS, "--golden-frames", "1", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{REC_FOLD.record} does not vouch" in err and not out.exists()

    assert main(["models", "quantize", str(model_dir)]) == 0
    assert main(argv) == 0
    members = _members(out)
    assert hashlib.sha256(members[f"model/{REC_FOLD.source}"]).hexdigest() == retrained
    record = json.loads(members[f"model/{REC_FOLD.record}"])
    assert record["source_sha256"] == retrained
    folded = members[f"model/{REC_FOLD.folded}"]
    assert hashlib.sha256(folded).hexdigest() == record["sha256"]
    assert folded != (MODELS_DIR / REC_FOLD.folded).read_bytes()
    assert f"model/{REC_FOLD.folded}" in _report(out)["runs"]  # type: ignore[operator]
