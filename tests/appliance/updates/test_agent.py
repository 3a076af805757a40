"""The OTA agent on a real release of the OCR model: stage, validate, switch, commit,
roll back; refusals and failures audited into the outbox ``critical`` class."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from appliance.inference.settings import GateOcrSettings, InferenceSettings
from appliance.updates.errors import ReleaseError, ReleaseValidationFailed
from appliance.updates.package import _write_tar, sign_release
from appliance.updates.release_tasks import read_golden_frame
from appliance.updates.slot_state import SlotStatus
from sync.outbox import Outbox
from sync.shared.signing import CounterNotAbove, WrongDeviceClass
from tests.appliance.updates.agent_harness import audit_bodies, make_agent
from tests.support.releases import NEW_VERSION, ReleaseKit


async def test_install_switch_commit_and_restart(
    release_kit: ReleaseKit, tmp_path: Path, outbox: Outbox
):
    steps: list[str] = []
    agent = make_agent(tmp_path, release_kit.keyring, outbox, on_step=steps.append)
    assert await agent.start() == []
    assert agent.serving("gate_ocr") == (None, None)  # the pinned models
    candidate = await agent.install(release_kit.build.archive, release_kit.sign(counter=2))
    assert candidate.slot == "a" and candidate.task.model_version == NEW_VERSION
    frame = read_golden_frame(agent.store.slot_dir("gate_ocr", "a") / "golden/000.png")
    assert candidate.task.run(frame).model_version == NEW_VERSION
    await agent.switch(candidate)
    await agent.commit("gate_ocr", {"shadow_frames": 0})
    assert steps == ["verified", "stage", "staged", "validated", "switch", "commit"]
    outcome = agent.state.task("gate_ocr").last_outcome
    assert outcome is not None and (outcome.result, outcome.counter) == ("committed", 2)
    slot, info = agent.serving("gate_ocr")
    assert slot == "a" and info is not None and info.status is SlotStatus.ACTIVE
    # The floor moved to the manifest's signed issue time, durably.
    assert agent.store.load_floor(0).per_subject == {"gate-ocr": release_kit.issued_at}

    # A restart finds the same, checks the slot's files, and loads it.
    again = make_agent(tmp_path, release_kit.keyring, outbox)
    assert await again.start() == []
    loaded = await again.load_serving("gate_ocr")
    assert loaded is not None and loaded.model_version == NEW_VERSION
    # The same release again is not above the active counter.
    with pytest.raises(CounterNotAbove):
        await again.install(release_kit.build.archive, release_kit.sign(counter=2))
    actions = [b["action"] for b in audit_bodies(outbox)]
    assert actions == ["model.staged", "model.switched", "model.committed", "model.refused"]
    assert audit_bodies(outbox)[-1]["detail"]["check"] == "counter_not_above"


async def test_a_refusal_is_audited_with_its_check(
    release_kit: ReleaseKit, tmp_path: Path, outbox: Outbox
):
    agent = make_agent(tmp_path, release_kit.keyring, outbox)
    agent.settings = agent.settings.model_copy(update={"device_class": "coral-v2"})
    await agent.start()
    with pytest.raises(WrongDeviceClass):
        await agent.install(release_kit.build.archive, release_kit.sign())
    (body,) = audit_bodies(outbox)
    assert body["action"] == "model.refused" and body["detail"]["check"] == "device_class"
    outcome = agent.state.task("gate_ocr").last_outcome  # reported in the next handshake
    assert outcome is not None and (outcome.result, outcome.check) == ("refused", "device_class")
    assert agent.serving("gate_ocr") == (None, None)


async def test_latency_budget_failure_leaves_the_active_model(
    release_kit: ReleaseKit, tmp_path: Path, outbox: Outbox
):
    tight = InferenceSettings(gate_ocr=GateOcrSettings(sla_p99_ms=0.001))
    agent = make_agent(tmp_path, release_kit.keyring, outbox, inference=tight)
    await agent.start()
    with pytest.raises(ReleaseValidationFailed) as caught:
        await agent.install(release_kit.build.archive, release_kit.sign())
    assert caught.value.check == "latency"
    slots = agent.state.task("gate_ocr")
    assert slots.active is None and slots.slots["a"].status is SlotStatus.FAILED
    body = audit_bodies(outbox)[-1]
    assert body["action"] == "model.validation_failed" and body["detail"]["check"] == "latency"
    # Not retried: the same release is refused at once next time.
    with pytest.raises(ReleaseError, match="failed on this device before"):
        await agent.install(release_kit.build.archive, release_kit.sign())


def _release_with_wrong_golden(kit: ReleaseKit, out: Path) -> Path:
    """The real release with one expected golden reading changed (then re-signed):
    a model that does not reproduce what its release claims."""
    members: dict[str, bytes] = {}
    with tarfile.open(kit.build.archive) as tar:
        for member in tar:
            source = tar.extractfile(member)
            assert source is not None
            members[member.name] = source.read()
    contents = json.loads(members["release.json"])
    contents["golden"][0]["expected"][0]["value"] = "MSCU0000000"
    members["release.json"] = json.dumps(contents).encode()
    _write_tar(out, members)
    return out


async def test_golden_mismatch_fails_validation(
    release_kit: ReleaseKit, tmp_path: Path, outbox: Outbox
):
    archive = _release_with_wrong_golden(release_kit, tmp_path / "wrong.tar")
    _, manifest = sign_release(
        archive, [release_kit.key], counter=2, issued_at=release_kit.issued_at, expires_in_s=86_400
    )
    agent = make_agent(tmp_path, release_kit.keyring, outbox)
    await agent.start()
    with pytest.raises(ReleaseValidationFailed, match="MSCU0000000") as caught:
        await agent.install(archive, manifest)
    assert caught.value.check == "golden"
    assert agent.state.task("gate_ocr").slots["a"].status is SlotStatus.FAILED
    outcome = agent.state.task("gate_ocr").last_outcome
    assert outcome is not None and (outcome.result, outcome.check) == (
        "validation_failed",
        "golden",
    )


async def test_rollback_to_the_fallback_then_the_pinned_models(
    release_kit: ReleaseKit, tmp_path: Path, outbox: Outbox
):
    agent = make_agent(tmp_path, release_kit.keyring, outbox)
    await agent.start()
    for counter in (2, 3):
        candidate = await agent.install(
            release_kit.build.archive, release_kit.sign(counter=counter)
        )
        await agent.switch(candidate)
        await agent.commit("gate_ocr")
    assert agent.serving("gate_ocr")[0] == "b"
    slot, info = await agent.rollback("gate_ocr", "technician asked", actor="technician")
    assert slot == "a" and info is not None and info.counter == 2
    assert await agent.rollback("gate_ocr", "again", actor="technician") == (None, None)
    with pytest.raises(ReleaseError, match="pinned"):
        await agent.rollback("gate_ocr", "nothing left")
    body = audit_bodies(outbox)[-1]
    assert body["action"] == "model.rolled_back" and body["detail"]["actor"] == "technician"
    assert body["detail"]["now_serving"] == "pinned"


async def test_a_damaged_active_slot_falls_back_at_start(
    release_kit: ReleaseKit, tmp_path: Path, outbox: Outbox
):
    agent = make_agent(tmp_path, release_kit.keyring, outbox)
    await agent.start()
    candidate = await agent.install(release_kit.build.archive, release_kit.sign(counter=2))
    await agent.switch(candidate)
    await agent.commit("gate_ocr")
    model = agent.store.slot_dir("gate_ocr", "a") / "model/ch_PP-OCRv4_rec_infer.onnx"
    with model.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\xff\xff")
    again = make_agent(tmp_path, release_kit.keyring, outbox)
    notes = await again.start()
    assert again.serving("gate_ocr") == (None, None) and "damaged" in notes[0]
    assert await again.load_serving("gate_ocr") is None
    assert audit_bodies(outbox)[-1]["action"] == "model.recovered"


def test_write_tar_is_reproducible(tmp_path: Path):
    members = {"b": b"2", "a": b"1"}
    _write_tar(tmp_path / "1.tar", members)
    _write_tar(tmp_path / "2.tar", dict(reversed(members.items())))
    assert (tmp_path / "1.tar").read_bytes() == (tmp_path / "2.tar").read_bytes()
    with tarfile.open(fileobj=io.BytesIO((tmp_path / "1.tar").read_bytes())) as tar:
        assert [(m.name, m.mtime, m.uid) for m in tar] == [("a", 0, 0), ("b", 0, 0)]
