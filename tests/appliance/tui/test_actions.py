"""The technician actions of the local API against a real daemon: a temporary cap runs out,
the support bundle exported from the TUI holds no secret, every action is audited."""

from __future__ import annotations

import asyncio
import tarfile
import time
from pathlib import Path

import pytest

from appliance.daemon import Daemon
from appliance.tui.app import YardlinkTui
from appliance.tui.client import ApplianceClient, ApplianceRefused
from tests.appliance.daemon_harness import TOKEN
from tests.appliance.tui.tui_harness import daemon_config, until
from tests.sync.ingest_server import running_ingest


async def test_a_temporary_cap_runs_out_back_to_the_configured_one(tmp_path: Path) -> None:
    async with running_ingest(tmp_path / "cloud") as ingest:
        config = daemon_config(tmp_path, ingest)
        config = config.model_copy(
            update={"sync": config.sync.model_copy(update={"bandwidth_cap_bps": 1e6})}
        )
        daemon = Daemon(config)
        await daemon.start()
        engine = daemon.sync_engine
        assert engine is not None and engine.bucket.rate_bps == 1e6
        try:
            async with ApplianceClient(daemon.api_url, TOKEN) as client:
                answer = await client.set_bandwidth_cap(8000, for_s=1)
                assert answer["bandwidth_cap_bps"] == 8000
                assert 0 < answer["bandwidth_cap_until"] - time.time() <= 1
                assert engine.bucket.rate_bps == 8000
                await asyncio.sleep(1.3)
                assert engine.bucket.rate_bps == 1e6  # the configured cap is back
                assert (await client.sync())["bandwidth_cap_until"] is None
                await client.set_bandwidth_cap(8000, for_s=1)
                await client.set_bandwidth_cap(None)  # lifted early: configured, timer gone
                assert engine.bucket.rate_bps == 1e6
                with pytest.raises(ApplianceRefused) as refused:
                    await client.set_bandwidth_cap(8000, for_s=0.5)
                assert refused.value.status == 400 and "for_s" in str(refused.value)
                records = (await client.audit())["records"]
            assert [(r["action"], r["detail"]) for r in records] == [
                ("sync.bandwidth_cap", {"bps": 8000.0, "for_s": 1.0}),
                ("sync.bandwidth_cap", {"bps": 8000.0, "for_s": 1.0}),
                ("sync.bandwidth_cap", {"bps": None, "for_s": None}),
            ]  # the refused one is not audited: nothing was done
        finally:
            await daemon.stop()


async def test_support_bundle_exported_from_the_tui(tmp_path: Path) -> None:
    async with running_ingest(tmp_path / "cloud") as ingest:
        daemon = Daemon(daemon_config(tmp_path, ingest))
        await daemon.start()
        out_dir = tmp_path / "laptop"
        out_dir.mkdir()
        app = YardlinkTui(ApplianceClient(daemon.api_url, TOKEN), poll_s=0.2, bundle_dir=out_dir)
        try:
            async with app.run_test(size=(80, 24)) as pilot:
                await until(pilot, lambda: app.polls >= 1)
                await pilot.press("x")
                await pilot.press("n")  # declined: nothing happens
                await pilot.pause(0.3)
                assert list(out_dir.iterdir()) == []
                await pilot.press("x", "y")
                await until(pilot, lambda: any(out_dir.iterdir()), what="bundle written")
                assert app.last_action is not None and "saved" in app.last_action
            (bundle,) = out_dir.iterdir()
            assert bundle.name.startswith("yardlink-support-gate-01-")
            with tarfile.open(bundle) as tar:
                names = sorted(Path(m.name).name for m in tar.getmembers())
                text = b"".join(tar.extractfile(m).read() for m in tar.getmembers())  # type: ignore[union-attr]
            assert "status.json" in names and "config.json" in names
            for secret in (
                TOKEN,
                ingest.token,
                (tmp_path / "var" / "plate.key").read_bytes().hex(),
            ):
                assert secret.encode() not in text
            async with ApplianceClient(daemon.api_url, TOKEN) as client:
                records = (await client.audit())["records"]
            assert [r["action"] for r in records] == ["support_bundle.export"]
        finally:
            await daemon.stop()


async def test_rollback_dialog_refuses_a_task_the_appliance_does_not_run(tmp_path: Path) -> None:
    daemon = Daemon(daemon_config(tmp_path, None))
    await daemon.start()
    app = YardlinkTui(ApplianceClient(daemon.api_url, TOKEN), poll_s=0.2)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.polls >= 1)
            await pilot.press("m")
            await pilot.press(*"nothing", "enter")  # no such task: refused in the dialog
            await pilot.pause(0.2)
            assert app.last_action is None and app.screen.__class__.__name__ == "RollbackScreen"
            await pilot.press("escape")
            await pilot.pause(0.2)
            assert app.screen is app.dashboard
    finally:
        await daemon.stop()


async def test_audit_trails_of_one_outbox_share_their_memory_and_name_the_actor(
    tmp_path: Path,
) -> None:
    import json

    from appliance.audit import AuditTrail
    from sync.outbox import Outbox
    from sync.protocol import Stream

    outbox = Outbox.open(tmp_path / "outbox")
    try:
        api = AuditTrail(outbox, device_id="gate-01", site_id="depot")
        agent = AuditTrail(outbox, device_id="gate-01", site_id="depot")
        await api.record("sync.pause")
        await agent.record("model.rolled_back", {"actor": "update-agent", "task": "gate_ocr"})
        assert [(r["action"], r["actor"]) for r in api.recent()] == [
            ("sync.pause", "technician"),
            ("model.rolled_back", "update-agent"),
        ]
        assert api.recent() == agent.recent()
        stored = [json.loads(r.payload) for r in outbox.read(Stream.CRITICAL, 0)]
        assert [row["kind"] for row in stored] == ["audit", "audit"]
        assert json.loads(stored[1]["body"])["detail"]["task"] == "gate_ocr"
        other = Outbox.open(tmp_path / "other")
        try:
            assert AuditTrail(other, device_id="gate-01", site_id="depot").recent() == []
        finally:
            await other.close()
    finally:
        await outbox.close()


async def test_sync_now_from_the_tui_handshakes_at_once(tmp_path: Path) -> None:
    async with running_ingest(tmp_path / "cloud") as ingest:
        config = daemon_config(tmp_path, ingest)
        config = config.model_copy(
            update={"sync": config.sync.model_copy(update={"handshake_interval_s": 3600.0})}
        )
        daemon = Daemon(config)
        await daemon.start()
        app = YardlinkTui(ApplianceClient(daemon.api_url, TOKEN), poll_s=0.2)

        def handshakes() -> int:
            return sum(1 for _, m, p in ingest.requests if (m, p) == ("POST", "/v1/sync"))

        try:
            async with app.run_test(size=(80, 24)) as pilot:
                await until(pilot, lambda: handshakes() == 1, what="the first handshake")
                await until(pilot, lambda: app.view.last_handshake_at is not None)
                first = app.view.last_handshake_at
                await pilot.press("s", "n")  # declined
                await pilot.pause(1.0)
                assert handshakes() == 1  # the next one is an hour away
                await pilot.press("s", "y")
                await until(pilot, lambda: handshakes() == 2, timeout=10, what="sync now")
                await until(pilot, lambda: app.view.last_handshake_at != first)
                assert app.last_action == "sync started"
                async with ApplianceClient(daemon.api_url, TOKEN) as client:
                    records = (await client.audit())["records"]
                assert [r["action"] for r in records] == ["sync.now"]
        finally:
            await daemon.stop()
