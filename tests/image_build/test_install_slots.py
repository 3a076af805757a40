"""A/B installs of real bundles (every runtime wheel, the real models) into a temporary
ROOT, the appliance started from the slot with the unit's command line, environment
and NOTIFY_SOCKET, as systemd would.  Slow: each install fills a venv of ~660 MB."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from appliance.sources.synthetic import SyntheticYardCamera
from image_build.build import BuiltBundle
from image_build.errors import InstallReverted
from image_build.install import InstallOptions, install, settle
from image_build.layout import ImageState, Layout
from image_build.platforms import Platform
from image_build.service import ProcessService, UnitCommand, healthz_ok
from image_build.source import build_project_wheel, copy_tree
from sync.shared.signing import Keyring, SigningKey
from tests.image_build.bundle_kit import CHECKOUT, EPOCH, bundle_factory, read_members

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TOKEN = "technician-token-for-tests-7Kq2xW9fRm4p"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _site_config(directory: Path, port: int) -> Path:
    path = directory / "site.toml"
    path.write_text(
        f"""version = 1
[site]
device_id = "unprovisioned"
site_id = "depot-north"
data_dir = "/var/lib/yardlink"
[local_api]
host = "127.0.0.1"
port = {port}
technician_token = "{TOKEN}"
[[sources.cameras]]
id = "gate-in"
"""
    )
    return path


@pytest.fixture(scope="module")
def bundles(
    tmp_path_factory: pytest.TempPathFactory,
    release_key: SigningKey,
    keyring: Keyring,
    project_wheel: Path,
    full_wheelhouse: Path,
    source_tree: Path,
) -> dict[str, BuiltBundle]:
    """v1 (counter 100), v2 (counter 200) and a broken release (300) whose daemon exits."""
    work = tmp_path_factory.mktemp("bundles")
    port = _free_port()
    site = _site_config(work, port)
    build = bundle_factory(release_key, keyring, project_wheel, full_wheelhouse)
    broken_tree = work / "broken-src"
    broken_tree.mkdir()
    copy_tree(source_tree, broken_tree)
    daemon = broken_tree / "appliance" / "daemon.py"
    text = daemon.read_text()
    marker = "    daemon = Daemon(config, claim_data_dir=claim)\n"
    assert marker in text
    daemon.write_text(text.replace(marker, '    raise RuntimeError("a broken release")\n' + marker))
    broken_wheel = build_project_wheel(broken_tree, work / "broken-dist", source_date_epoch=EPOCH)
    broken = bundle_factory(release_key, keyring, broken_wheel, full_wheelhouse)
    return {
        "v1": build(work / "v1", counter=100, site_config=site),
        "v2": build(work / "v2", counter=200, issued_at=EPOCH + 60, site_config=site),
        "broken": broken(work / "broken", counter=300, issued_at=EPOCH + 120, site_config=site),
    }


@pytest.fixture(scope="module")
def trust_file(tmp_path_factory: pytest.TempPathFactory, bundles: dict[str, BuiltBundle]) -> Path:
    members = {info.name: data for info, data in read_members(bundles["v1"].path)}
    path = tmp_path_factory.mktemp("trust") / "keyring.json"
    path.write_bytes(members["keys/keyring.json"])
    return path


def _first_install_options(root: Path, tmp_path: Path, trust: Path) -> InstallOptions:
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({"device_id": "gate-07", "token": "device-token-123"}))
    return InstallOptions(
        root=root,
        platform=Platform.X86_64,
        device_id="gate-07",
        credentials=credentials,
        trust=trust,
        health_deadline_s=120.0,
    )


def _api(layout: Layout) -> str:
    return healthz_url(layout).removesuffix("/healthz")


def healthz_url(layout: Layout) -> str:
    from image_build.service import health_url

    return health_url(layout.site_config)


def _status(layout: Layout) -> dict[str, object]:
    request = urllib.request.Request(
        f"{_api(layout)}/v1/status", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return dict(json.loads(answer.read()))


def _events_records(layout: Layout) -> int:
    outbox = _status(layout)["outbox"]
    assert isinstance(outbox, dict)
    return int(outbox["classes"]["events"]["records"])


def _push_frame(layout: Layout) -> None:
    frame = SyntheticYardCamera(3).frame(0).encode()
    request = urllib.request.Request(
        f"{_api(layout)}/v1/frames?camera=gate-in",
        data=frame,
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/jpeg"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 201


def _wait_records(layout: Layout, at_least: int, timeout_s: float = 60.0) -> int:
    deadline = time.monotonic() + timeout_s
    while (records := _events_records(layout)) < at_least:
        assert time.monotonic() < deadline, f"{records} events records, wanted {at_least}"
        time.sleep(0.2)
    return records


def _data_snapshot(layout: Layout) -> dict[str, bytes]:
    return {name: (layout.data_dir / name).read_bytes() for name in ("plate.key", "keep-me.txt")}


def test_install_update_and_a_broken_release_reverted(
    tmp_path: Path, bundles: dict[str, BuiltBundle], trust_file: Path
) -> None:
    root = tmp_path / "root"
    layout = Layout(root)
    service = ProcessService(layout)
    try:
        options = _first_install_options(root, tmp_path, trust_file)
        first = install(bundles["v1"].path, options, service)
        assert (first.slot, first.previous, first.healthy) == ("a", None, True)
        assert layout.current_slot() == "a"
        assert oct(layout.site_config.stat().st_mode & 0o777) == "0o600"
        assert layout.token_file.read_text().strip() == "device-token-123"  # [sync] token_file
        assert "device-token-123" not in layout.site_config.read_text()
        command = UnitCommand.parse(layout.unit_file, layout.current_slot())
        assert command.notify and service.ready  # READY=1 came through NOTIFY_SOCKET
        assert command.argv[0] == str(layout.slot("a") / "venv" / "bin" / "yardlink")  # %i
        _push_frame(layout)
        records = _wait_records(layout, 1)
        assert _status(layout)["device_id"] == "gate-07"
        (layout.data_dir / "keep-me.txt").write_text("the site's data")
        data = _data_snapshot(layout)

        update = InstallOptions(root=root, platform=Platform.X86_64, health_deadline_s=120.0)
        second = install(bundles["v2"].path, update, service)
        assert (second.slot, second.previous, second.healthy) == ("b", "a", True)
        assert layout.current_slot() == "b" and healthz_ok(healthz_url(layout))
        assert _events_records(layout) >= records  # the outbox carried over
        assert _data_snapshot(layout) == data
        state = ImageState.load(layout.state_file)
        assert (state.active, state.counter, state.trial) == ("b", 200, None)

        with pytest.raises(InstallReverted, match="switched back to slot b"):
            install(bundles["broken"].path, update, service)
        assert layout.current_slot() == "b"
        assert healthz_ok(healthz_url(layout))  # the previous release serves again
        _push_frame(layout)
        _wait_records(layout, records + 1)
        assert _data_snapshot(layout) == data
        state = ImageState.load(layout.state_file)
        assert (state.active, state.counter, state.trial) == ("b", 200, None)
    finally:
        service.stop()


def _cli_install(bundle: Path, root: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as stderr:
        return _popen_install(bundle, root, stderr)


def _popen_install(bundle: Path, root: Path, stderr: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "yardlink.cli",
            "image",
            "install",
            str(bundle),
            "--root",
            str(root),
            "--platform",
            "x86_64",
            "--service",
            "process",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=stderr,  # type: ignore[arg-type]
        env={**os.environ, "PYTHONPATH": str(CHECKOUT)},
        start_new_session=True,
    )


def _kill_with_children(process: subprocess.Popen[bytes]) -> None:
    children = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signal.SIGKILL)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait()


def _starts(layout: Layout) -> None:
    settle(layout, ImageState.load(layout.state_file))
    slot = layout.current_slot()
    assert slot is not None and layout.complete(slot)
    service = ProcessService(layout, log_path=layout.root / f"after-kill-{time.monotonic_ns()}.log")
    try:
        healthy, why = service.start_and_wait(120.0)
        assert healthy, why
    finally:
        service.stop()


def test_a_sigkill_at_any_step_leaves_a_slot_that_starts(
    tmp_path: Path, bundles: dict[str, BuiltBundle], trust_file: Path
) -> None:
    root = tmp_path / "root"
    layout = Layout(root)
    first = install(bundles["v1"].path, _first_install_options(root, tmp_path, trust_file), None)
    assert first.slot == "a"
    plate_key = None
    kill_points = {
        "verifying": lambda: True,
        "filling the venv": lambda: (layout.slot("b") / "venv" / "bin" / "python").exists(),
        "in the trial": lambda: ImageState.load(layout.state_file).trial is not None,
    }
    for step, reached in kill_points.items():
        installer = _cli_install(bundles["v2"].path, root, tmp_path / "installer.log")
        deadline = time.monotonic() + 300
        while not reached():
            assert installer.poll() is None, f"the install ended before {step}"
            assert time.monotonic() < deadline, f"never reached {step}"
            time.sleep(0.05)
        time.sleep(0.5)
        _kill_with_children(installer)
        _starts(layout)
        key = (layout.data_dir / "plate.key").read_bytes()
        assert plate_key in (None, key)
        plate_key = key
    finished = _cli_install(bundles["v2"].path, root, tmp_path / "final.log")
    assert finished.wait(600) == 0, (tmp_path / "final.log").read_text()[-3000:]
    assert layout.current_slot() == "b"
    _starts(layout)
    shutil.rmtree(root)
