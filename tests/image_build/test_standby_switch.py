"""The A/B switch's standby start, with real appliance processes (real models, outbox,
HTTP on loopback) run from a unit file as the installer's ``ProcessService`` runs them:
the new one loads its models beside the old one, which is told to hand over only then;
frames pushed throughout are each answered by one of the two and all processed.
A new one that cannot take over leaves the old one serving, untouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from appliance.handover import LOCK_NAME
from image_build.layout import Layout
from image_build.service import ProcessService, health_url, healthz_ok
from tests.image_build._harness import TOKEN, frame_request, free_port
from tests.image_build.bundle_kit import CHECKOUT

pytestmark = pytest.mark.timeout(300)

DEADLINE_S = 180.0


def _write_site(layout: Layout, models_dir: Path, port: int) -> None:
    layout.etc.mkdir(parents=True, exist_ok=True)
    layout.site_config.write_text(
        f"""version = 1
models_dir = "{models_dir}"
[site]
device_id = "gate-07"
site_id = "depot-north"
data_dir = "{layout.data_dir}"
[outbox]
path = "{layout.data_dir / "outbox"}"
[local_api]
host = "127.0.0.1"
port = {port}
technician_token = "{TOKEN}"
[inference.face_anonymize]
enabled = false
[[sources.cameras]]
id = "gate-in"
""",
        encoding="utf-8",
    )


def _install_unit(layout: Layout) -> None:
    """The shape of the bundle's unit, running this checkout's appliance."""
    layout.unit_file.parent.mkdir(parents=True, exist_ok=True)
    layout.unit_file.write_text(
        f"""[Service]
Type=notify
ExecStart={sys.executable} -m yardlink.cli appliance run --config {layout.site_config}
Environment=PYTHONPATH={CHECKOUT} PYTHONDONTWRITEBYTECODE=1
WorkingDirectory={layout.data_dir}
""",
        encoding="utf-8",
    )


@pytest.fixture
def gateway(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "root")
    _write_site(layout, CHECKOUT / "models", free_port())
    _install_unit(layout)
    return layout


class Pusher(threading.Thread):
    """Pushes frames one after another (a few a second: each is run through OCR, on a
    loaded machine); keeps every id answered 201."""

    def __init__(self, api: str) -> None:
        super().__init__(daemon=True)
        self.request = frame_request(api)
        self.stopping = threading.Event()
        self.stored: list[str] = []
        self.refused = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                with urllib.request.urlopen(self.request, timeout=30) as answer:
                    assert answer.status == 201
                    self.stored.append(json.loads(answer.read())["id"])
            except (urllib.error.URLError, OSError):
                self.refused += 1  # 503 while stopping, or no listener: pushed again
            time.sleep(0.3)


def _processed(layout: Layout) -> set[str]:
    return {p.name for p in (layout.data_dir / "spool" / "processed" / "gate-in").glob("push-*")}


def test_the_new_appliance_takes_over_only_once_its_models_are_loaded(gateway: Layout) -> None:
    service = ProcessService(gateway)
    try:
        healthy, why = service.start_and_wait(DEADLINE_S)
        assert healthy, why
        old = service.process
        assert old is not None
        pusher = Pusher(health_url(gateway.site_config).removesuffix("/healthz"))
        pusher.start()
        while len(pusher.stored) < 3:
            assert pusher.is_alive()
            time.sleep(0.05)

        outcome = service.hand_over(DEADLINE_S)
        assert outcome.healthy, outcome.why
        assert old.returncode == 0  # handed over and stopped cleanly (SIGUSR2)
        assert service.process is not None and service.process.pid != old.pid
        assert service.ready  # READY=1 from the new one, after the handover
        before = len(pusher.stored)
        deadline = time.monotonic() + 60
        while len(pusher.stored) < before + 3:  # the new one answers
            assert time.monotonic() < deadline and pusher.is_alive()
            time.sleep(0.05)
        pusher.stopping.set()
        pusher.join(60)

        stored = set(pusher.stored)
        assert len(stored) == len(pusher.stored)
        deadline = time.monotonic() + 120
        while not stored <= _processed(gateway):  # every frame answered 201 is processed
            assert time.monotonic() < deadline, sorted(stored - _processed(gateway))[:5]
            time.sleep(0.2)
        lock = (gateway.data_dir / LOCK_NAME).read_text().strip()
        assert lock == str(service.process.pid)
    finally:
        service.stop()


def test_a_new_appliance_that_cannot_load_its_models_leaves_the_old_one_serving(
    gateway: Layout, tmp_path: Path
) -> None:
    service = ProcessService(gateway)
    try:
        healthy, why = service.start_and_wait(DEADLINE_S)
        assert healthy, why
        old = service.process
        assert old is not None
        port = int(health_url(gateway.site_config).rsplit(":", 1)[1].split("/")[0])
        empty = tmp_path / "no-models"
        empty.mkdir()
        _write_site(gateway, empty, port)  # the new release's models are missing

        outcome = service.hand_over(DEADLINE_S)
        assert not outcome.healthy and outcome.old_serving
        assert "exited with code 2" in outcome.why
        assert service.process is old and old.poll() is None
        assert healthz_ok(health_url(gateway.site_config))
        log = service.log_path.read_text(encoding="utf-8")
        assert "not taking over from the running appliance: model" in log
    finally:
        service.stop()


@pytest.mark.slow  # three appliance starts; tests/appliance/test_handover.py has the logic
def test_a_plain_start_refuses_a_data_dir_in_use_and_a_standby_can_be_called_off(
    gateway: Layout,
) -> None:
    service = ProcessService(gateway)
    env = {"PYTHONPATH": str(CHECKOUT), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    command = [sys.executable, "-m", "yardlink.cli", "appliance", "run"]
    command += ["--config", str(gateway.site_config)]
    try:
        healthy, why = service.start_and_wait(DEADLINE_S)
        assert healthy, why
        second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
        assert second.returncode == 2
        assert f"holds {gateway.data_dir / LOCK_NAME}" in second.stderr

        with subprocess.Popen(
            [*command, "--standby"], stderr=subprocess.PIPE, text=True, env=env
        ) as standby:
            lines = []
            assert standby.stderr is not None
            for line in standby.stderr:  # the log says when it waits
                lines.append(line)
                if "standby" in line and "waiting" in line:
                    break
            standby.send_signal(signal.SIGTERM)
            assert standby.wait(60) == 0, "".join(lines)
        assert healthz_ok(health_url(gateway.site_config))  # the running one never noticed
    finally:
        service.stop()
