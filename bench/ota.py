"""Benchmark of a model update from publish to active on the appliance (issue 17).

    python -m bench.ota [--quick]

The real parts, in one process: the ingest service (``build_app``, its model
registry and rollouts), the link emulator (2 Mbit/s, 150 ms RTT; ``--quick``:
8 Mbit/s, a shorter steady phase and shadow window) and the appliance daemon
with its sync engine (handshake every ``HANDSHAKE_S``) and the real OCR models.
A camera pushes frames at a pace the machine sustains (three times the measured
service time, at least one a second: the shadow window runs two models a
frame).  A release of the pinned PP-OCRv4 files under a new version (built and
signed with the release tooling) is published through the admin API and its
rollout started (canary site = the device's); the
device hears of it in a handshake, downloads, verifies, stages, validates,
switches, shadows and commits it.  Rows:

- publish-to-active: from the publish request to the pipeline serving the new
  release (switched, shadow window running), against the link-limited time
  (artifact bits / link rate); goal <= 1.2x.  Its parts: publish to the first
  artifact byte on disk (publish, rollout start, the next handshake, the
  manifest), the download, and download-to-serving (verify, stage, load,
  golden outputs);
- publish-to-committed: after the shadow window (informational: the window's
  length is configured);
- frames dropped over the switch: frames accepted minus results stored; goal 0;
- the task's p99 latency (frame received to record durable) during the shadow
  window against the steady state before the publish; goal <= 1.3x;
- abort propagation: ``bench.ota_rollout``'s, with its own ingest service and
  simulated devices; goal <= one handshake interval;
- process CPU (ingest, link emulator and appliance share the process): publish
  to serving, and per frame in the shadow window against the steady state (the
  old model re-runs beside the new one), so a loaded machine's stretched wall
  times can be read against the work really done.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from appliance.config import parse_config
from appliance.daemon import Daemon
from appliance.sources.synthetic import SyntheticYardCamera
from bench._common import Row, command_for, parse_args, row, write_results
from bench.ota_rollout import abort_propagation_row, publish_and_start, signed_release
from cloud_ingest.app import build_app
from cloud_ingest.app_keys import CATALOG
from cloud_ingest.provisioning import add_device, add_operator
from cloud_ingest.settings import IngestSettings
from sync.linkemu import LinkConditions, LinkEmulator
from sync.protocol.releases import RolloutPlan

NAME = "ota"
REPO = Path(__file__).resolve().parents[1]
TOKEN = "technician-token-for-bench-ota-7Kq2xW9fRm4p"
VERSION = "bench-ota-rc1"
DEVICE, SITE, CAMERA = "gate-01", "wh-nyc-01", "gate-in"
HANDSHAKE_S = 5.0  # the device's handshake interval (the site default is 30 s)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(0.99 * len(ordered) + 0.5) - 1)] if ordered else 0.0


@dataclass
class Timeline:
    """What the bench saw, on the monotonic clock."""

    results: list[tuple[float, str, float]] = field(default_factory=list)  # t, version, ms
    accepted: int = 0
    refused: int = 0  # the camera was told to retry (queue or spool full; not a drop)
    published: float | None = None
    download_started: float | None = None
    downloaded: float | None = None
    serving: float | None = None
    committed: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)  # mark -> process CPU seconds

    def mark_cpu(self, mark: str) -> None:
        self.cpu[mark] = time.process_time()


def _config(work: Path, keyring: Path, cloud_url: str, token: str, shadow_frames: int) -> Any:
    var = work / "var"
    return parse_config(
        {
            "version": 1,
            "site": {"device_id": DEVICE, "site_id": SITE, "data_dir": str(var)},
            "outbox": {"path": str(var / "outbox")},
            "local_api": {"port": 0, "technician_token": TOKEN},
            "sources": {"cameras": [{"id": CAMERA}], "queue_bound": 64},
            "telemetry": {"interval_s": 3600},
            "models_dir": str(REPO / "models"),
            "sync": {
                "cloud_url": cloud_url,
                "token": token,
                "handshake_interval_s": HANDSHAKE_S,
                "batch_max_age_s": 1.0,
            },
            # A shared machine may be many times slower than a gateway: the golden-latency
            # gate is tested elsewhere; here it must not stop what is being timed.
            "inference": {
                "face_anonymize": {"enabled": False},
                "gate_ocr": {"sla_p99_ms": 30_000},
            },
            "updates": {
                "keyring_file": str(keyring),
                "shadow_frames": shadow_frames,
                "shadow_min_frames": shadow_frames,
                "shadow_max_s": 600.0,  # then frames are compared in spite of a backlog
            },
        },
        environ={},
    )


class Camera:
    """Pushes synthetic gate frames: closed loop to measure the service time, then open
    loop at ``interval_s`` (what a real camera does)."""

    def __init__(self, daemon: Daemon, timeline: Timeline) -> None:
        self._daemon = daemon
        self._timeline = timeline
        camera = SyntheticYardCamera(seed=11)
        self._frames = [camera.frame(i).encode() for i in range(10)]
        self._headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/jpeg"}
        self.interval_s = 1.0
        self.stop = asyncio.Event()

    async def push(self, session: aiohttp.ClientSession) -> None:
        url = f"{self._daemon.api_url}/v1/frames?camera={CAMERA}"
        data = self._frames[(self._timeline.accepted + self._timeline.refused) % 10]
        async with session.post(url, data=data, headers=self._headers) as response:
            if response.status in (201, 202):  # durable in the spool / queued in memory
                self._timeline.accepted += 1
            else:
                self._timeline.refused += 1

    async def calibrate(self, frames: int, floor_s: float) -> float:
        """Push ``frames`` one at a time; the pace is three times the median service
        time: in the shadow window each frame runs on two models, with headroom."""
        async with aiohttp.ClientSession() as session:
            for _ in range(frames):
                seen = len(self._timeline.results)
                await self.push(session)
                while len(self._timeline.results) == seen:
                    await asyncio.sleep(0.02)
        took = [ms for _, _, ms in self._timeline.results[-frames + 1 :]]
        self.interval_s = max(floor_s, 3.0 * statistics.median(took) / 1000.0)
        return self.interval_s

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            next_at = time.monotonic()
            while not self.stop.is_set():
                await self.push(session)
                next_at += self.interval_s
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def _watch(daemon: Daemon, downloads: Path, timeline: Timeline, give_up: float) -> None:
    """Poll (50 ms) for the part file and the slot state until the release is committed."""
    assert daemon.updates is not None
    while timeline.committed is None:
        now = time.monotonic()
        if now > give_up:
            raise TimeoutError(f"no commit in time; report: {daemon.updates.report()}")
        part = any(downloads.glob("*.part"))
        if timeline.download_started is None and part:
            timeline.download_started = now
        if timeline.download_started is not None and timeline.downloaded is None and not part:
            timeline.downloaded = now
        task = daemon.updates.report()["gate_ocr"]
        if task["model_version"] == VERSION:
            if timeline.serving is None:
                timeline.serving = now
                timeline.mark_cpu("serving")
            if not task["on_trial"]:
                timeline.committed = now
                timeline.mark_cpu("committed")
        if task["last_verdict"] is not None and not task["last_verdict"]["commit"]:
            raise RuntimeError(f"the release was rolled back: {task['last_verdict']}")
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Setup:
    quick: bool
    rate_bps: float
    shadow_frames: int
    steady_s: float


async def _measure(setup: Setup, work: Path) -> tuple[Timeline, int, float]:
    plan = RolloutPlan(canary_sites=[SITE], stages=[100], min_devices=1, bake_s=3600)
    release = signed_release(work, plan, VERSION)
    keyring = release.keyring
    app = build_app(IngestSettings(data_dir=work / "cloud", release_keyring_file=keyring))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    timeline = Timeline()
    link = LinkEmulator(("127.0.0.1", port), LinkConditions(rtt_s=0.150, rate_bps=setup.rate_bps))
    daemon: Daemon | None = None
    camera_task: asyncio.Task[None] | None = None
    try:
        catalog = app[CATALOG]
        operator = (await add_operator(catalog, "bench", actor="bench", now=time.time())).token
        device = await add_device(catalog, DEVICE, SITE, actor="bench", now=time.time())
        await link.start()
        daemon = Daemon(_config(work, keyring, link.url, device.token, setup.shadow_frames))
        await daemon.start()
        record: Callable[[dict[str, Any]], None] = lambda e: (  # noqa: E731
            timeline.results.append(
                (time.monotonic(), str(e["model_version"]), float(e["latency_ms"]))
            )
            if e.get("task") == "gate_ocr"
            else None
        )
        daemon.events.add_listener(record)
        camera = Camera(daemon, timeline)
        pace = await camera.calibrate(4, floor_s=1.0)
        camera_task = asyncio.create_task(camera.run())
        steady_from, steady_frames = time.monotonic(), len(timeline.results)
        timeline.mark_cpu("steady")
        await asyncio.sleep(setup.steady_s)
        timeline.published = time.monotonic()
        timeline.mark_cpu("published")
        timeline.cpu["steady_wall"] = timeline.published - steady_from
        timeline.cpu["steady_frames"] = len(timeline.results) - steady_frames
        async with aiohttp.ClientSession() as session:
            await publish_and_start(session, base, operator, release)
        downloads = Path(daemon.config.site.data_dir) / "updates" / "downloads"
        give_up = time.monotonic() + (900.0 if setup.quick else 1800.0)
        await _watch(daemon, downloads, timeline, give_up)
        camera.stop.set()
        await camera_task
        deadline = time.monotonic() + 120  # the frames still queued finish
        while len(timeline.results) < timeline.accepted and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        if camera_task is not None and not camera_task.done():
            camera_task.cancel()
        if daemon is not None:
            await daemon.stop()
        await link.close()
        await runner.cleanup()
    return timeline, release.archive.stat().st_size, pace


def _rows(
    setup: Setup, timeline: Timeline, artifact_bytes: int, pace: float, command: str
) -> list[Row]:
    assert timeline.published is not None and timeline.serving is not None
    assert timeline.committed is not None
    link_limited = artifact_bytes * 8 / setup.rate_bps
    start = timeline.published
    serving = timeline.serving - start
    download_started = (timeline.download_started or start) - start
    downloaded = (timeline.downloaded or timeline.serving) - start
    dropped = timeline.accepted - len(timeline.results)
    steady = [ms for t, _, ms in timeline.results[4:] if t < start]
    shadow = [  # the new release's results until the commit (a frame in flight at the
        # switch ran on the old model: not in the window)
        ms
        for t, version, ms in timeline.results
        if version == VERSION and t <= timeline.committed
    ]
    size = f"{artifact_bytes / 1e6:.1f} MB"
    link = f"{setup.rate_bps / 1e6:g} Mbit/s 150 ms"
    return [
        row(
            f"publish-to-active (serving), {size} release, {link}",
            serving,
            "s",
            anchor="artifact bits / link rate",
            anchor_value=round(link_limited, 3),
            goal="<= 1.2x",
            command=command,
            met=serving <= 1.2 * link_limited,
        ),
        row(
            f"  publish to first artifact byte (handshake every {HANDSHAKE_S:g} s)",
            download_started,
            "s",
            anchor="handshake interval",
            anchor_value=HANDSHAKE_S,
            goal="informational",
            command=command,
        ),
        row(
            "  artifact download",
            downloaded - download_started,
            "s",
            anchor="artifact bits / link rate",
            anchor_value=round(link_limited, 3),
            goal="informational",
            command=command,
        ),
        row(
            "  downloaded to serving (verify, stage, load, golden outputs)",
            serving - downloaded,
            "s",
            goal="informational",
            command=command,
        ),
        row(
            f"publish-to-committed (shadow window of {setup.shadow_frames} frames)",
            timeline.committed - start,
            "s",
            anchor="artifact bits / link rate",
            anchor_value=round(link_limited, 3),
            goal="informational",
            command=command,
        ),
        row(
            f"frames dropped over the switch ({timeline.accepted} taken,"
            f" {timeline.refused} refused busy, one per {pace:.1f} s)",
            dropped,
            "frames",
            goal="0",
            command=command,
            met=dropped == 0,
        ),
        row(
            f"gate_ocr p99 during the shadow window ({len(shadow)} frames)",
            _p99(shadow),
            "ms",
            anchor=f"steady-state p99 ({len(steady)} frames)",
            anchor_value=_p99(steady),
            goal="<= 1.3x",
            command=command,
            met=_p99(shadow) <= 1.3 * _p99(steady),
        ),
        *_cpu_rows(timeline, len(shadow), command),
    ]


def _cpu_rows(timeline: Timeline, shadow_frames: int, command: str) -> list[Row]:
    """Process CPU (ingest, link emulator and appliance share the process): the wall
    times above stretch on a loaded machine, these do not."""
    cpu = timeline.cpu
    assert timeline.published is not None and timeline.serving is not None
    steady_per_frame = (cpu["published"] - cpu["steady"]) / max(1.0, cpu["steady_frames"])
    shadow_per_frame = (cpu["committed"] - cpu["serving"]) / max(1, shadow_frames)
    return [
        row(
            "  process CPU, publish to serving",
            cpu["serving"] - cpu["published"],
            "s",
            anchor="wall time",
            anchor_value=round(timeline.serving - timeline.published, 3),
            goal="informational",
            command=command,
        ),
        row(
            "process CPU per frame during the shadow window (old model re-run beside)",
            shadow_per_frame * 1000,
            "ms",
            anchor="steady state",
            anchor_value=round(steady_per_frame * 1000, 3),
            goal="informational",
            command=command,
        ),
        row(
            "process CPU in the steady state (cores busy)",
            (cpu["published"] - cpu["steady"]) / max(1e-9, cpu["steady_wall"]),
            "cores",
            goal="informational",
            command=command,
        ),
    ]


async def run(quick: bool) -> list[Row]:
    command = command_for(NAME, quick)
    setup = Setup(
        quick=quick,
        rate_bps=8e6 if quick else 2e6,
        shadow_frames=5 if quick else 20,
        steady_s=15.0 if quick else 90.0,
    )
    with tempfile.TemporaryDirectory(prefix="bench-ota-") as tmp:
        timeline, artifact_bytes, pace = await _measure(setup, Path(tmp))
    rows = _rows(setup, timeline, artifact_bytes, pace, command)
    rows.append(await abort_propagation_row(quick, command))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(NAME, argv)
    rows = asyncio.run(run(args.quick))
    write_results(NAME, rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
