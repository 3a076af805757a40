"""Benchmark of the appliance bundle: size against its contents, build time,
install-to-healthy, and the time frames are refused during an A/B switch.

    python -m bench.image [--quick]

Bundles are built from HEAD of this checkout with a throw-away release key;
``--quick`` builds x86_64 only (the full run also builds aarch64).  The switch is
measured by a thread that pushes a frame every 50 ms to the running appliance
while a newer bundle is installed; the longest stretch without a 202 is the
not-serving time.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from appliance.sources.synthetic import SyntheticYardCamera
from bench._common import command_for, parse_args, row, write_results
from image_build.build import BuiltBundle, build_from_checkout, keyring_envelope
from image_build.install import InstallOptions, install
from image_build.layout import Layout
from image_build.platforms import Platform
from image_build.service import ProcessService, health_url
from sync.shared.signing import Keyring, SigningKey

CHECKOUT = Path(__file__).resolve().parents[1]
TOKEN = "technician-token-for-bench-7Kq2xW9fRm4p"
NAME = "image"


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


class FramePusher(threading.Thread):
    """Push a frame every ``interval_s``; remember the longest gap between 202s."""

    def __init__(self, api: str, interval_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.url = f"{api}/v1/frames?camera=gate-in"
        self.frame = SyntheticYardCamera(3).frame(0).encode()
        self.interval_s = interval_s
        self.stop_event = threading.Event()
        self.longest_gap_s = 0.0
        self.accepted = 0

    def run(self) -> None:
        last_ok = time.monotonic()
        while not self.stop_event.is_set():
            request = urllib.request.Request(
                self.url,
                data=self.frame,
                method="POST",
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/jpeg"},
            )
            try:
                with urllib.request.urlopen(request, timeout=2) as answer:
                    ok = answer.status == 202
            except (urllib.error.URLError, OSError):
                ok = False
            now = time.monotonic()
            if ok:
                self.longest_gap_s = max(self.longest_gap_s, now - last_ok)
                last_ok = now
                self.accepted += 1
            time.sleep(self.interval_s)


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
            pusher = FramePusher(health_url(layout.site_config).removesuffix("/healthz"))
            pusher.start()
            time.sleep(1.0)
            started = time.perf_counter()
            install(newer.path, InstallOptions(root=root, platform=Platform.X86_64), service)
            update_s = time.perf_counter() - started
            time.sleep(1.0)
            pusher.stop_event.set()
            pusher.join()
        finally:
            service.stop()
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
            row(
                "not serving frames during the A/B switch",
                pusher.longest_gap_s,
                "s",
                goal="< 5 s",
                command=command,
                met=pusher.longest_gap_s < 5.0,
            ),
        ]
    write_results(NAME, rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
