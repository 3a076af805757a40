"""SIGKILL at each step of an update: the appliance comes back with a slot that loads
and a state that says which (a real child process, real release, real outbox)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.updates.release_tasks import read_golden_frame
from appliance.updates.slot_state import SlotStatus
from tests.appliance.updates.agent_harness import (
    audit_bodies,
    keyring_to_json,
    make_agent,
)
from tests.support.outbox import outbox_at
from tests.support.releases import REPO, ReleaseKit


@pytest.fixture(scope="session")
def committed_root(release_kit: ReleaseKit, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An appliance whose gate_ocr runs release counter 2 from slot a (committed)."""
    import asyncio

    root = tmp_path_factory.mktemp("committed")

    async def install() -> None:
        outbox = outbox_at(root)
        try:
            agent = make_agent(root, release_kit.keyring, outbox)
            await agent.start()
            candidate = await agent.install(release_kit.build.archive, release_kit.sign(counter=2))
            await agent.switch(candidate)
            await agent.commit("gate_ocr")
        finally:
            await outbox.close()

    asyncio.run(install())
    return root


# step -> (slot serving after the restart, counter serving, status of slot b)
EXPECTED = {
    "verified": ("a", 2, SlotStatus.EMPTY),
    "stage": ("a", 2, SlotStatus.EMPTY),
    "staged": ("a", 2, SlotStatus.EMPTY),
    "validated": ("a", 2, SlotStatus.EMPTY),
    "switch": ("a", 2, SlotStatus.FAILED),  # on trial, never committed: rolled back
    "commit": ("b", 3, SlotStatus.ACTIVE),
    "none": ("b", 3, SlotStatus.ACTIVE),
}
FAST = {"stage", "switch"}


@pytest.mark.parametrize(
    "step", [s if s in FAST else pytest.param(s, marks=pytest.mark.slow) for s in EXPECTED]
)
async def test_sigkill_at_each_step(
    step: str, release_kit: ReleaseKit, committed_root: Path, tmp_path: Path
):
    root = tmp_path / "appliance"
    shutil.copytree(committed_root, root)
    manifest = tmp_path / "m.json"
    manifest.write_bytes(release_kit.sign(counter=3))
    keyring = tmp_path / "keyring.json"
    keyring.write_text(keyring_to_json(release_kit.keyring))
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.appliance.updates.ota_crash_child",
            str(root),
            str(release_kit.build.archive),
            str(manifest),
            str(keyring),
            step,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
    )
    if step == "none":
        assert child.returncode == 0 and "done" in child.stdout, child.stderr
    else:
        assert child.returncode == -9, child.stderr[-2000:]

    outbox = outbox_at(root)
    try:
        agent = make_agent(root, release_kit.keyring, outbox)
        notes = await agent.start()
        slot, info = agent.serving("gate_ocr")
        want_slot, want_counter, b_status = EXPECTED[step]
        assert (slot, info.counter if info else None) == (want_slot, want_counter), notes
        assert agent.state.task("gate_ocr").slots["b"].status is b_status
        # The state file on disk says the same as the agent.
        assert agent.store.load_state() == agent.state
        # And the slot it names loads and reproduces its golden output.
        task = await agent.load_serving("gate_ocr")
        assert task is not None
        directory = agent.store.slot_dir("gate_ocr", slot or "a")
        result = task.run(read_golden_frame(directory / "golden/000.png"))
        assert result.model_version == info.version if info else False
        assert result.detections
        actions = [b["action"] for b in audit_bodies(outbox)]
        if step in ("switch",):
            assert actions[-2:] == ["model.switched", "model.recovered"]
        if step in ("commit", "none"):
            assert actions[-1] == "model.committed"
    finally:
        await outbox.close()
