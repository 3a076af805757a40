"""An OTA agent over a real slot store, a real outbox (audit into ``critical``) and the
session's real release; used by the agent tests and the crash child."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.audit import AuditTrail
from appliance.inference.settings import GateOcrSettings, InferenceSettings
from appliance.updates.agent import UpdateAgent
from appliance.updates.release_tasks import close_task
from appliance.updates.settings import UpdateSettings
from appliance.updates.slot_store import SlotStore
from sync.outbox import Outbox
from sync.protocol import Stream
from sync.shared.signing import Keyring
from tests.support.outbox import outbox_at
from tests.support.releases import ReleaseKit

DEVICE_CLASS = "x86-cpu"
# The machine running the tests is shared and slow; the budget check itself is
# tested with a budget no model can meet.
GENEROUS = InferenceSettings(gate_ocr=GateOcrSettings(sla_p99_ms=30_000))


def make_agent(
    root: Path,
    keyring: Keyring,
    outbox: Outbox,
    *,
    inference: InferenceSettings = GENEROUS,
    on_step: Callable[[str], None] = lambda step: None,
) -> UpdateAgent:
    return UpdateAgent(
        SlotStore(root / "updates"),
        keyring,
        settings=UpdateSettings(device_class=DEVICE_CLASS, golden_latency_runs=1),
        inference=inference,
        audit=AuditTrail(outbox, device_id="gate-01", site_id="depot-test"),
        on_step=on_step,
    )


async def committed_release(root: Path, kit: ReleaseKit, *, watch: bool = False) -> Path:
    """The session's release installed, switched and committed into real slots (``watch``:
    its health watch marked), as a daemon that then restarted would have left it;
    returns the updates directory."""
    outbox = outbox_at(root)
    try:
        agent = make_agent(root, kit.keyring, outbox)
        await agent.start()
        candidate = await agent.install(kit.build.archive, kit.sign(counter=2))
        close_task(candidate.task)
        await agent.switch(candidate)
        await agent.commit("gate_ocr", watch=watch)
        if watch:
            assert agent.state.task("gate_ocr").watched() == "gate-ocr@2"
    finally:
        await outbox.close()
    return root / "updates"


def audit_bodies(outbox: Outbox) -> list[dict[str, Any]]:
    """Every audit record's body in the outbox ``critical`` class, in order."""
    records = outbox.read(Stream.CRITICAL, max_records=10_000)
    return [json.loads(json.loads(r.payload)["body"]) for r in records]


def keyring_to_json(keyring: Keyring) -> str:
    return json.dumps(keyring.signed_document())


def keyring_from_json(text: str) -> Keyring:
    return Keyring.from_document(json.loads(text))
