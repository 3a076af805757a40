"""A rollout over simulated devices in several sites: real handshakes over HTTP against
the real service, real downloads of the published release (no inference: each device
decides its verdict as the test tells it)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from cloud_ingest.app_keys import CATALOG
from sync.protocol import ModelInfo, ModelOutcome, SyncRequest, SyncResponse
from sync.shared.signing import Envelope
from tests.support.ingest import Ingest, bearer
from tests.support.model_registry import Kit, publish

CANARY = "wh-nyc-01"
Verdict = Literal["commit", "fail", "activate"]


@dataclass
class SimDevice:
    device_id: str
    site_id: str
    token: str
    verdict: Verdict = "commit"
    counter: int | None = None  # the release counter it runs (None: the pinned model)
    version: str | None = None
    outcome: ModelOutcome | None = None
    told: list[str] = field(default_factory=list)  # "install v" / "rollback v", in order

    def inventory(self) -> list[ModelInfo]:
        return [
            ModelInfo(
                name="rec",
                version=self.version or "pinned",
                task="gate_ocr",
                release="gate-ocr" if self.counter is not None else None,
                counter=self.counter,
                outcome=self.outcome,
            )
        ]

    async def handshake(self, ingest: Ingest) -> SyncResponse:
        request = SyncRequest(
            device_id=self.device_id, site_id=self.site_id, models=self.inventory()
        )
        response = await ingest.client.post(
            "/v1/sync", json=request.model_dump(mode="json"), headers=bearer(self.token)
        )
        assert response.status == 200, await response.text()
        answer = SyncResponse.model_validate(await response.json())
        for assignment in answer.models:
            self.told.append(f"{assignment.action} {assignment.version}")
            if assignment.action == "install":
                await self._install(ingest, assignment.manifest_url, assignment.version)
            elif assignment.counter == self.counter:
                self._report("rolled_back", reason="cloud abort")
                self.counter = self.version = None
        return answer

    async def _install(self, ingest: Ingest, manifest_url: str, version: str) -> None:
        manifest = await ingest.client.get(manifest_url, headers=bearer(self.token))
        signed: dict[str, Any] = Envelope.parse(await manifest.read()).signed
        artifact_url = manifest_url.removesuffix("/manifest") + "/artifact"
        artifact = await (await ingest.client.get(artifact_url, headers=bearer(self.token))).read()
        assert hashlib.sha256(artifact).hexdigest() == signed["artifact"]["sha256"]
        if self.verdict == "fail":
            self.outcome = ModelOutcome(
                name="gate-ocr",
                version=version,
                counter=signed["counter"],
                result="validation_failed",
                check="golden",
            )
            return
        self.counter, self.version = signed["counter"], version
        self._report("committed" if self.verdict == "commit" else "activated")

    def _report(self, result: Any, reason: str | None = None) -> None:
        assert self.version is not None and self.counter is not None
        self.outcome = ModelOutcome(
            name="gate-ocr",
            version=self.version,
            counter=self.counter,
            result=result,
            reason=reason,
        )


async def fleet(ingest: Ingest, verdicts: dict[str, Verdict] | None = None) -> list[SimDevice]:
    sites = {CANARY: 3, "yard-b": 4, "yard-c": 4}
    devices = []
    for site, count in sites.items():
        for i in range(count):
            device_id = f"{site}-gw{i}"
            token = await ingest.device(device_id, site)
            verdict = (verdicts or {}).get(device_id, "commit")
            devices.append(SimDevice(device_id, site, token, verdict))
    return devices


async def start(ingest: Ingest, kit: Kit, operator: str) -> dict[str, Any]:
    artifact = kit.build.archive.read_bytes()
    assert (await publish(ingest, operator, kit.signed, artifact)).status == 201
    response = await ingest.client.post(
        f"/v1/admin/models/gate-ocr/{kit.manifest.version}/rollout",
        json={"action": "start"},
        headers=bearer(operator),
    )
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def status(ingest: Ingest, kit: Kit, operator: str) -> dict[str, Any]:
    response = await ingest.client.get(
        f"/v1/admin/models/gate-ocr/{kit.manifest.version}/rollout", headers=bearer(operator)
    )
    assert response.status == 200
    return dict(await response.json())


async def test_a_good_release_reaches_every_device(service: Ingest, kit: Kit) -> None:
    operator = await service.operator()
    devices = await fleet(service)
    assert (await start(service, kit, operator))["phase"] == "canary"
    first_round = True
    for _ in range(12):
        for device in devices:
            await device.handshake(service)
        if first_round:  # only the canary site is offered the release at first
            assert {d.site_id for d in devices if d.told} == {CANARY}
            first_round = False
        service.clock.now += 61  # past bake_s
    final = await status(service, kit, operator)
    assert final["phase"] == "complete" and final["percent"] == 100
    assert all(d.counter == kit.manifest.counter for d in devices)
    assert all(d.told == [f"install {kit.manifest.version}"] for d in devices)  # once each
    assert final["committed"] == len(devices) and final["failed"] == 0
    events = await service.app[CATALOG].list_audit(after_id=0, limit=500)
    steps = [(e.action, e.detail.get("percent")) for e in events if e.action.startswith("rollout.")]
    assert steps == [
        ("rollout.start", 0),
        ("rollout.stage", 50),
        ("rollout.complete", 100),
    ]
    assert sum(e.action == "model.outcome" for e in events) == len(devices)
    metrics = await (await service.client.get("/metrics", headers=bearer(operator))).text()
    assert 'yardlink_ingest_rollout_percent{name="gate-ocr"' in metrics
    assert 'phase="complete",version="2026-12-07-rc1"} 1.0' in metrics


async def test_a_release_failing_on_canaries_aborts_before_any_other_device_has_it(
    service: Ingest, kit: Kit
) -> None:
    operator = await service.operator()
    verdicts: dict[str, Verdict] = {
        f"{CANARY}-gw0": "activate",  # takes it, still in its shadow window
        f"{CANARY}-gw1": "fail",
        f"{CANARY}-gw2": "fail",
    }
    devices = await fleet(service, verdicts)
    await start(service, kit, operator)
    aborted_in_round = None
    for round_no in range(6):
        for device in devices:
            await device.handshake(service)
            state = await status(service, kit, operator)
            if state["phase"] == "aborted" and aborted_in_round is None:
                aborted_in_round = round_no
        service.clock.now += 61
    state = await status(service, kit, operator)
    assert state["phase"] == "aborted"
    assert "2 of 3 reporting devices failed" in state["reason"]
    assert aborted_in_round == 1  # the round in which the failures were reported
    non_canary = [d for d in devices if d.site_id != CANARY]
    assert all(d.told == [] and d.counter is None for d in non_canary)
    # the device that took the release was told to go back, and did
    taker = devices[0]
    version = kit.manifest.version
    assert taker.told == [f"install {version}", f"rollback {version}"]
    assert taker.counter is None and taker.outcome is not None
    assert taker.outcome.result == "rolled_back"
    events = await service.app[CATALOG].list_audit(after_id=0, limit=500)
    aborts = [e for e in events if e.action == "rollout.abort"]
    assert len(aborts) == 1 and aborts[0].actor == "rollout"


async def test_operator_pause_resume_abort_over_the_admin_api(service: Ingest, kit: Kit) -> None:
    operator = await service.operator()
    device = (await fleet(service))[0]  # a canary device
    await start(service, kit, operator)
    url = f"/v1/admin/models/gate-ocr/{kit.manifest.version}/rollout"

    async def command(action: str, expected: int = 200, **extra: str) -> dict[str, Any]:
        response = await service.client.post(
            url, json={"action": action, **extra}, headers=bearer(operator)
        )
        assert response.status == expected, await response.text()
        return dict(await response.json())

    await command("start", 409)  # one rollout per release
    assert (await command("pause"))["paused"] is True
    await command("pause", 409)
    assert (await device.handshake(service)).models == []  # paused: nothing new offered
    assert (await command("resume"))["paused"] is False
    device.verdict = "activate"
    await device.handshake(service)
    assert device.counter == kit.manifest.counter
    aborted = await command("abort", reason="wrong plates on lane 2")
    assert aborted["phase"] == "aborted" and aborted["reason"] == "wrong plates on lane 2"
    answer = await device.handshake(service)
    assert [m.action for m in answer.models] == ["rollback"]
    await command("resume", 409)
    listing = await service.client.get("/v1/admin/models", headers=bearer(operator))
    body = await listing.json()
    assert [r["version"] for r in body["releases"]] == [kit.manifest.version]
    assert body["rollouts"][0]["phase"] == "aborted"
    # devices may not drive rollouts, and unknown releases are 404
    as_device = await service.client.post(
        url, json={"action": "abort"}, headers=bearer(device.token)
    )
    assert as_device.status == 403
    unknown = await service.client.post(
        "/v1/admin/models/gate-ocr/nope/rollout", json={"action": "start"}, headers=bearer(operator)
    )
    assert unknown.status == 404
    events = await service.app[CATALOG].list_audit(after_id=0, limit=500)
    actions = [(e.action, e.actor) for e in events if e.action.startswith("rollout.")]
    assert actions == [
        ("rollout.start", "alice"),
        ("rollout.pause", "alice"),
        ("rollout.resume", "alice"),
        ("rollout.abort", "alice"),
    ]


async def test_a_signed_rollback_is_offered_to_devices_above_its_counter(
    service: Ingest, kit: Kit
) -> None:
    operator = await service.operator()
    token = await service.device("wh-nyc-01-gw0", CANARY)
    device = SimDevice("wh-nyc-01-gw0", CANARY, token)  # the only device: it carries the stages
    await start(service, kit, operator)
    artifact = kit.build.archive.read_bytes()
    rollback = kit.resign(version="rollback-rc", counter=1, rollback=True)
    assert (await publish(service, operator, rollback, artifact)).status == 201
    rollback_url = "/v1/admin/models/gate-ocr/rollback-rc/rollout"
    start_rollback = {"json": {"action": "start"}, "headers": bearer(operator)}
    for _ in range(4):
        await device.handshake(service)
        service.clock.now += 61
        if (await status(service, kit, operator))["phase"] != "complete":
            # one running rollout per name
            assert (await service.client.post(rollback_url, **start_rollback)).status == 409
    assert (await status(service, kit, operator))["phase"] == "complete"
    assert device.counter == kit.manifest.counter  # runs counter 2, committed
    assert (await service.client.post(rollback_url, **start_rollback)).status == 200
    answer = await device.handshake(service)
    assert [(m.action, m.version, m.counter) for m in answer.models] == [
        ("install", "rollback-rc", 1)
    ]


async def test_odd_outcomes_are_ignored_or_kept_safely(service: Ingest, kit: Kit) -> None:
    """Found by schemathesis: a counter beyond SQLite's integers was a 500.  Reports on
    releases not rolled out, or naming another counter, are ignored."""
    operator = await service.operator()
    (device, *_) = await fleet(service)
    await start(service, kit, operator)
    version = kit.manifest.version
    odd = [
        {"name": "gate-ocr", "version": version, "counter": 2**70, "result": "refused"},
        {"name": "\ud8fe\udf08", "version": "x", "counter": 1, "result": "refused"},
        {
            "name": "gate-ocr",
            "version": version,
            "counter": 2,
            "result": "rolled_back",
            "reason": "bad \ud8fe\udf08",
        },
    ]
    for outcome in odd:
        body = {
            "device_id": device.device_id,
            "site_id": device.site_id,
            "models": [{"name": "rec", "version": "v", "outcome": outcome}],
        }
        response = await service.client.post("/v1/sync", json=body, headers=bearer(device.token))
        assert response.status == 200, await response.text()
    state = await status(service, kit, operator)
    assert (state["reporting"], state["failed"]) == (1, 1)  # only the last one counted
