"""The TUI against a REAL daemon on loopback syncing to the REAL ingest service.

Each action is driven with the keyboard through Textual's pilot and must change
the daemon's behaviour: pause really holds uploads, the cap really caps the
rate; a daemon stopped under the TUI gives a banner, and a new one a recovery.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq

from appliance.daemon import Daemon
from appliance.tui.app import YardlinkTui
from appliance.tui.client import ApplianceClient
from appliance.tui.widgets import Banner, LinesPanel
from sync.protocol import Stream
from tests.appliance.daemon_harness import TOKEN
from tests.appliance.tui.tui_harness import daemon_config, sleep, until
from tests.sync.ingest_server import event_payload, lake_seqs, running_ingest


def _panel(app: YardlinkTui, name: str) -> list[str]:
    return app.dashboard.query_one(f"#{name}", LinesPanel).lines


def _batch_puts(requests: list[tuple[float, str, str]]) -> int:
    return sum(1 for _, method, path in requests if method == "PUT" and "/batches/" in path)


def _lake_audit_actions(cloud_dir: Path) -> list[str]:
    actions = []
    for path in sorted((cloud_dir / "lake" / Stream.CRITICAL.value).rglob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            if row["kind"] == "audit":
                actions.append(json.loads(row["body"])["action"])
    return actions


async def test_dashboard_shows_the_status_and_pause_really_holds_uploads(tmp_path: Path) -> None:
    cloud_dir = tmp_path / "cloud"
    async with running_ingest(cloud_dir) as ingest:
        daemon = Daemon(daemon_config(tmp_path, ingest))
        await daemon.start()
        engine, outbox = daemon.sync_engine, daemon.outbox
        assert engine is not None and outbox is not None
        app = YardlinkTui(ApplianceClient(daemon.api_url, TOKEN), poll_s=0.2)
        try:
            async with app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: app.view.link == "online", what="link online")
                assert "gate-01" in str(app.dashboard.query_one(Banner).render())
                assert _panel(app, "link")[0].split()[:2] == ["state", "ONLINE"]

                await pilot.press("p")
                await pilot.press("y")  # the confirmation
                await until(pilot, lambda: engine.progress().paused, what="engine paused")
                await until(pilot, lambda: bool(app.view.paused), what="dashboard paused")
                assert "PAUSED" in _panel(app, "link")[0]
                puts_before = _batch_puts(ingest.requests)
                for i in range(30):
                    await outbox.append(Stream.EVENTS, event_payload(i))
                engine.notify()
                await until(
                    pilot,
                    lambda: any(
                        line.split()[:2] == ["events", "30"] for line in _panel(app, "outbox")
                    ),
                    what="the outbox panel shows 30 events",
                )
                await sleep(pilot, 2.0)
                assert _batch_puts(ingest.requests) == puts_before  # nothing sent while paused
                assert lake_seqs(cloud_dir, Stream.EVENTS) == []

                await pilot.press("p")
                await pilot.press("y")
                await until(
                    pilot, lambda: len(lake_seqs(cloud_dir, Stream.EVENTS)) == 30, what="drained"
                )
                assert app.last_action == "uploads resumed"
                async with ApplianceClient(daemon.api_url, TOKEN) as client:
                    audit = await client.audit()
                assert [r["action"] for r in audit["records"]] == ["sync.pause", "sync.resume"]
                await until(
                    pilot,
                    lambda: _lake_audit_actions(cloud_dir) == ["sync.pause", "sync.resume"],
                    what="the audit records reached the cloud through the critical class",
                )
        finally:
            await daemon.stop()


async def test_the_cap_set_in_the_tui_really_caps_the_upload_rate(tmp_path: Path) -> None:
    cloud_dir = tmp_path / "cloud"
    cap_bps = 200_000.0
    async with running_ingest(cloud_dir) as ingest:
        daemon = Daemon(daemon_config(tmp_path, ingest))
        await daemon.start()
        engine, outbox = daemon.sync_engine, daemon.outbox
        assert engine is not None and outbox is not None
        app = YardlinkTui(ApplianceClient(daemon.api_url, TOKEN), poll_s=0.2)

        async def send_batch(first: int) -> tuple[int, float]:
            """Append 400 events with incompressible plate tokens; the bytes of the batches
            the cloud stored (each batch is sent as that Parquet file) and the seconds taken."""
            stored_before = _lake_bytes(cloud_dir)
            payloads = [event_payload(i, plate_token=_noise(i)) for i in range(first, first + 400)]
            started = time.monotonic()
            await outbox.append_many(Stream.EVENTS, payloads)  # one batch, all at once
            engine.sync_now()
            await until(
                pilot,
                lambda: len(lake_seqs(cloud_dir, Stream.EVENTS)) == first + 400,
                timeout=60,
                what="batch delivered",
            )
            elapsed = time.monotonic() - started
            return _lake_bytes(cloud_dir) - stored_before, elapsed

        try:
            async with app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: app.view.link == "online", what="link online")
                free_bytes, free_s = await send_batch(0)

                await pilot.press("b")
                await pilot.press(*"200")  # kbit/s
                await pilot.press("tab", *"10", "enter")  # minutes
                await pilot.press("y")
                await until(pilot, lambda: engine.bucket.rate_bps == cap_bps, what="cap applied")
                await until(pilot, lambda: app.view.cap_bps == cap_bps, what="cap shown")
                assert app.view.cap_until is not None
                assert 590 < app.view.cap_until - time.time() <= 600
                capped_bytes, capped_s = await send_batch(400)
        finally:
            await daemon.stop()
    capped_rate = capped_bytes * 8 / capped_s
    free_rate = free_bytes * 8 / free_s
    assert capped_bytes > 40_000  # enough bytes for the cap to show (about 2 s at the cap)
    print(f"capped {capped_bytes} B in {capped_s:.2f} s, free {free_bytes} B in {free_s:.2f} s")
    assert capped_rate <= cap_bps * 1.15, (capped_rate, cap_bps)
    assert free_rate > cap_bps * 2, (free_rate, cap_bps)  # without the cap it is much faster


def _lake_bytes(cloud_dir: Path) -> int:
    return sum(p.stat().st_size for p in (cloud_dir / "lake" / "events").rglob("*.parquet"))


def _noise(i: int) -> str:
    import hashlib

    return "".join(hashlib.sha256(f"noise-{i}-{k}".encode()).hexdigest() for k in range(4))


async def test_banner_while_the_daemon_is_down_then_recovery(tmp_path: Path) -> None:
    daemon = Daemon(daemon_config(tmp_path, None))
    await daemon.start()
    port = int(daemon.api_url.rsplit(":", 1)[1])
    app = YardlinkTui(ApplianceClient(daemon.api_url, TOKEN), poll_s=0.2, follow_events=True)
    restarted: Daemon | None = None
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.polls >= 1 and app.unreachable is None)
            await daemon.stop()
            banner = app.dashboard.query_one(Banner)
            await until(pilot, lambda: app.unreachable is not None, what="banner")
            await sleep(pilot, 0.5)
            assert banner.has_class("down")
            assert "unreachable" in str(banner.render())
            assert _panel(app, "alerts")[0].startswith("!FAIL unreachable")
            polls = app.polls
            await sleep(pilot, 1.0)  # the app keeps retrying, and keeps running
            assert app.is_running and app.polls == polls

            restarted = Daemon(daemon_config(tmp_path, None, port=port))
            await restarted.start()
            await pilot.press("r")  # retry now
            await until(pilot, lambda: app.unreachable is None, timeout=15, what="recovery")
            await sleep(pilot, 0.3)
            assert not banner.has_class("down")
            assert "gate-01" in str(banner.render())
            assert app.polls > polls
    finally:
        if restarted is not None:
            await restarted.stop()


async def test_real_models_dashboard_and_live_events_show_tokens_not_plates(
    tmp_path: Path,
) -> None:
    from textual.widgets import DataTable

    from appliance.privacy.tokens import TOKEN_PREFIX
    from appliance.sources.frames import decode_frame
    from appliance.sources.synthetic import SyntheticYardCamera
    from appliance.tui.screens.events import EventsScreen

    daemon = Daemon(daemon_config(tmp_path, None, models=True))
    await daemon.start()
    frames = SyntheticYardCamera(5).frames(4)
    plates = [t.value for f in frames for t in f.truths if t.kind == "plate"]
    assert plates  # the camera draws plates: the test can see one leak
    app = YardlinkTui(ApplianceClient(daemon.api_url, TOKEN), poll_s=0.2)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.polls >= 1)
            await pilot.press("e")
            assert isinstance(app.screen, EventsScreen)
            for frame in frames:
                data = frame.encode()
                await daemon.queue_frame(decode_frame("gate-in", data, None, max_bytes=1 << 24))
            table = app.screen.query_one(DataTable)
            await until(pilot, lambda: table.row_count == 2 * len(frames), timeout=90)
            cells = [str(cell) for key in table.rows for cell in table.get_row(key)]
            shown = " ".join(cells)
            plate_values = [
                part.split("=", 1)[1] for part in shown.split() if part.startswith("plate=")
            ]
            assert plate_values, "no plate read: the leak check would prove nothing"
            assert all(value.startswith(TOKEN_PREFIX) for value in plate_values)
            for plate in plates:
                assert plate not in shown and plate.replace(" ", "") not in shown
            await pilot.press("escape")
            await sleep(pilot, 0.6)  # one more poll after the last result
            async with ApplianceClient(daemon.api_url, TOKEN) as client:
                status = await client.status()
            await sleep(pilot, 0.6)
            rows = {line[2:14].strip(): line for line in _panel(app, "inference")[1:]}
            for task, entry in status["tasks"].items():
                latency, sla = entry["latency_ms"], entry["sla_p99_ms"]
                line = rows.get(task[:12])
                assert line is not None, (task, rows)
                assert f"{latency['p50']:.0f}" in line.split()
                assert f"{latency['p99']:.0f}/{sla:.0f}" in line
                assert line.startswith("!") == (latency["p99"] > sla)
            models = _panel(app, "models")
            for event in app.recent_events:
                assert any(str(event["model_version"])[:19] in line for line in models)
    finally:
        await daemon.stop()


async def test_a_clock_far_from_the_clouds_is_an_alert(tmp_path: Path) -> None:
    from cloud_ingest.app_keys import CLOCK

    def cloud_two_minutes_behind(app: object) -> None:
        app[CLOCK] = lambda: time.time() - 120.0  # type: ignore[index]

    async with running_ingest(tmp_path / "cloud", customize=cloud_two_minutes_behind) as ingest:
        daemon = Daemon(daemon_config(tmp_path, ingest))
        await daemon.start()
        app = YardlinkTui(ApplianceClient(daemon.api_url, TOKEN), poll_s=0.2)
        try:
            async with app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: any(a.code == "clock_skew" for a in app.view.alerts))
                (alert,) = [a for a in app.view.alerts if a.code == "clock_skew"]
                skew = float(alert.message.split()[2])
                assert 119 <= skew <= 121, alert.message
                assert any("clock" in line for line in _panel(app, "alerts"))
        finally:
            await daemon.stop()
