"""Benchmark of the appliance bundle: size against its contents, build time,
install-to-healthy, and the time the appliance is not serving during an A/B switch
(with the installer's own process manager, and under the real systemd:
``bench/image_systemd.py``).

    python -m bench.image [--quick]

Bundles are built from HEAD of this checkout with a throw-away release key;
``--quick`` builds x86_64 only (the full run also builds aarch64).  The switch is
measured by a thread that asks ``GET /healthz`` every 20 ms (and one that pushes a
frame every 50 ms): the longest stretch without a 200 (a 201) is the not-serving
time.  The A/B install switches with a standby start (``ProcessService.hand_over``);
its anchor, in the same run, is the switch as it was before (stop the running
appliance, then start the new one), measured on the same slot; both are then
repeated, interleaved, on the installed slot.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from appliance.sources.synthetic import SyntheticYardCamera
from bench._common import Row, command_for, parse_args, row, write_results
from image_build.build import BuiltBundle, build_from_checkout, keyring_envelope
from image_build.install import InstallOptions, install
from image_build.layout import Layout
from image_build.platforms import Platform
from image_build.service import ProcessService, health_url
from sync.shared.signing import Keyring, SigningKey

CHECKOUT = Path(__file__).resolve().parents[1]
TOKEN = "technician-token-for-bench-7Kq2xW9fRm4p"
NAME = "image"
DEADLINE_S = 180.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _site_config(directory: Path, port: int) -> Path:
    path = directory / "site.toml"
    path.write_text(
        f"version = 1\n[site]\ndevice_id = 'x'\nsite_id = 'bench'\ndata_dir = '/var/lib/yardlink'\n"
        f"[local_api]\nhost = '127.0.0.1'\nport = {port}\ntechnician_token = '{TOKEN}'\n"
        "[[sources.cameras]]\nid = 'gate-in'\n"
    )
    return path


class GapWatcher(threading.Thread):
    """Ask for something every ``interval_s``; remember the longest gap between answers
    that count as serving (``restart`` begins a new measurement)."""

    def __init__(self, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.stop_event = threading.Event()
        self.longest_gap_s = 0.0
        self.served = 0
        self._last_ok = time.monotonic()
        self._lock = threading.Lock()

    def ask(self) -> bool:
        raise NotImplementedError

    def restart(self) -> None:
        with self._lock:
            self.longest_gap_s = 0.0
            self._last_ok = time.monotonic()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                ok = self.ask()
            except (urllib.error.URLError, OSError):
                ok = False  # refused, 503, or no listener
            now = time.monotonic()
            if ok:
                with self._lock:
                    self.longest_gap_s = max(self.longest_gap_s, now - self._last_ok)
                    self._last_ok = now
                    self.served += 1
            time.sleep(self.interval_s)


class HealthWatcher(GapWatcher):
    """``GET /healthz`` 200: the appliance is serving."""

    def __init__(self, url: str) -> None:
        super().__init__(0.02)
        self.url = url

    def ask(self) -> bool:
        with urllib.request.urlopen(self.url, timeout=1) as answer:
            return bool(answer.status == 200)


class FramePusher(GapWatcher):
    """``POST /v1/frames`` answered 201 (durable) or 202 (queued)."""

    def __init__(self, api: str) -> None:
        super().__init__(0.05)
        self.url = f"{api}/v1/frames?camera=gate-in"
        self.frame = SyntheticYardCamera(3).frame(0).encode()

    def ask(self) -> bool:
        request = urllib.request.Request(
            self.url,
            data=self.frame,
            method="POST",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/jpeg"},
        )
        with urllib.request.urlopen(request, timeout=2) as answer:
            return answer.status in (201, 202)


class SwitchTimer:
    """Both watchers around one switch: (longest /healthz gap, longest frame gap)."""

    def __init__(self, health: HealthWatcher, frames: FramePusher) -> None:
        self.health, self.frames = health, frames

    def measure(self, switch: Callable[[], object]) -> tuple[float, float]:
        served = self.health.served
        for watcher in (self.health, self.frames):
            watcher.restart()
        switch()
        deadline = time.monotonic() + 30
        while self.health.served < served + 5 and time.monotonic() < deadline:
            time.sleep(0.05)  # served again, seen by the watcher, so the gap is closed
        time.sleep(0.5)
        return self.health.longest_gap_s, self.frames.longest_gap_s


def _stop_then_start(service: ProcessService) -> None:
    """The switch before the standby start: the anchor."""
    service.stop()
    healthy, why = service.start_and_wait(DEADLINE_S)
    if not healthy:
        raise SystemExit(f"stop-then-start: not healthy: {why}")


def _standby(service: ProcessService) -> None:
    outcome = service.hand_over(DEADLINE_S)
    if not outcome.healthy:
        raise SystemExit(f"standby switch: not healthy: {outcome.why}")


def _build(
    out: Path, target: Platform, key: SigningKey, ring: Keyring, **kw: object
) -> tuple[BuiltBundle, float]:
    started = time.perf_counter()
    built = build_from_checkout(
        CHECKOUT,
        out,
        platform=target,
        signing_key=key,
        keyring=ring,
        **kw,  # type: ignore[arg-type]
    )
    return built, time.perf_counter() - started


SWITCH_GOAL_S = 5.0  # the goal for the time not serving during an A/B switch


def switch_rows(
    where: str,
    standby_gaps: list[tuple[float, float]],
    anchor_name: str,
    anchor_gaps: list[tuple[float, float]],
    command: str,
) -> list[Row]:
    """The not-serving rows of one way of switching slots (``where``: "" for the
    installer's process manager, " under systemd"): the install's own switch
    (``standby_gaps[0]``, /healthz and frames) against the first ``anchor_name``
    of the same run, and the worst standby switch against the worst anchor, the
    two measured interleaved. Gaps are (healthz s, frames s)."""
    worst = max(gap for gap, _ in standby_gaps)
    worst_anchor = max(gap for gap, _ in anchor_gaps)
    same_run = f"{anchor_name} (same run)"
    measured = [  # (what, gap, anchor, anchor's gap)
        (
            "(/healthz) during the A/B install's switch",
            standby_gaps[0][0],
            same_run,
            anchor_gaps[0][0],
        ),
        ("frames during the A/B install's switch", standby_gaps[0][1], same_run, anchor_gaps[0][1]),
        (
            f"(/healthz), worst of {len(standby_gaps)} standby switches",
            worst,
            f"worst of {len(anchor_gaps)} {anchor_name}, interleaved",
            worst_anchor,
        ),
    ]
    return [
        row(
            f"not serving {what}{where}",
            gap,
            "s",
            goal="< 5 s",
            command=command,
            anchor=anchor,
            anchor_value=anchor_gap,
            met=gap < SWITCH_GOAL_S,
        )
        for what, gap, anchor, anchor_gap in measured
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(NAME, argv)
    command = command_for(NAME, args.quick)
    key = SigningKey.generate()
    ring = Keyring(version=1, keys={key.public.keyid: key.public})
    commit = subprocess.run(
        ["git", "-C", str(CHECKOUT), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-image-") as tmp:
        work = Path(tmp)
        site = _site_config(work, _free_port())
        platforms = [Platform.X86_64] if args.quick else [Platform.X86_64, Platform.AARCH64]
        built: dict[str, BuiltBundle] = {}
        for target in platforms:
            _build(work / f"warm-{target}", target, key, ring, commit=commit)  # fills the cache
            bundle, seconds = _build(
                work / f"v1-{target}", target, key, ring, commit=commit, counter=1, site_config=site
            )
            again, _ = _build(
                work / f"again-{target}",
                target,
                key,
                ring,
                commit=commit,
                counter=1,
                site_config=site,
            )
            built[target.value] = bundle
            rows += [
                row(
                    f"bundle size {target.value}",
                    bundle.size / 1e6,
                    "MB",
                    goal="<= 1.05x the wheels and models in it",
                    command=command,
                    anchor="sum of wheels and models",
                    anchor_value=bundle.payload_bytes / 1e6,
                    met=bundle.size <= 1.05 * bundle.payload_bytes,
                ),
                row(
                    f"build time {target.value} (wheelhouse cached)",
                    seconds,
                    "s",
                    goal="(measured)",
                    command=command,
                ),
                row(
                    f"rebuild identical {target.value}",
                    float(again.sha256 == bundle.sha256),
                    "bool",
                    goal="1 (same sha256)",
                    command=command,
                    met=again.sha256 == bundle.sha256,
                ),
            ]
        newer, _ = _build(
            work / "v2", Platform.X86_64, key, ring, commit=commit, counter=2, site_config=site
        )
        trust = work / "keyring.json"
        trust.write_bytes(keyring_envelope(ring, key))
        creds = work / "token"
        creds.write_text("bench-device-token")
        root = work / "root"
        layout = Layout(root)
        service = ProcessService(layout)
        try:
            started = time.perf_counter()
            install(
                built["x86_64"].path,
                InstallOptions(
                    root=root,
                    platform=Platform.X86_64,
                    device_id="bench-01",
                    credentials=creds,
                    trust=trust,
                ),
                service,
            )
            to_healthy = time.perf_counter() - started
            url = health_url(layout.site_config)
            health, frames = HealthWatcher(url), FramePusher(url.removesuffix("/healthz"))
            for watcher in (health, frames):
                watcher.start()
            timer = SwitchTimer(health, frames)
            time.sleep(1.0)
            started = time.perf_counter()
            update_s = 0.0

            def update() -> None:
                nonlocal update_s
                install(newer.path, InstallOptions(root=root, platform=Platform.X86_64), service)
                update_s = time.perf_counter() - started

            install_gaps = timer.measure(update)
            standby_gaps = [install_gaps]
            anchor_gaps = [timer.measure(lambda: _stop_then_start(service))]
            for _ in range(1 if args.quick else 2):  # interleaved A/B on the installed slot
                standby_gaps.append(timer.measure(lambda: _standby(service)))
                anchor_gaps.append(timer.measure(lambda: _stop_then_start(service)))
            for watcher in (health, frames):
                watcher.stop_event.set()
                watcher.join()
        finally:
            service.stop()
        from bench.image_systemd import systemd_switch_rows  # it imports this module's watchers

        rounds = 1 if args.quick else 2
        under_systemd = systemd_switch_rows(
            work, built["x86_64"], newer, trust, url, command, rounds
        )
        print("switch gaps (healthz s, frames s): standby", standby_gaps, "stop-start", anchor_gaps)
        rows += [
            row(
                "install to healthy (first install)",
                to_healthy,
                "s",
                goal="(measured)",
                command=command,
            ),
            row(
                "update to healthy (A/B install)", update_s, "s", goal="(measured)", command=command
            ),
        ]
        rows += switch_rows("", standby_gaps, "stop-then-start", anchor_gaps, command)
        rows += under_systemd
    write_results(NAME, rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
