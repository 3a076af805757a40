"""A/B installs of real bundles (every runtime wheel, the real models) into a temporary
ROOT, the appliance started from the slot with the unit's command line, environment
and NOTIFY_SOCKET, as systemd would.  Slow: each install fills a venv of ~660 MB."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from image_build.build import BuiltBundle
from image_build.errors import InstallReverted
from image_build.install import InstallOptions, install, settle
from image_build.layout import ImageState, Layout
from image_build.platforms import Platform
from image_build.service import ProcessService, UnitCommand, healthz_ok
from tests.image_build._harness import (
    TOKEN,
    FullReleases,
    frame_request,
    free_port,
    unprovisioned_site,
)
from tests.image_build.bundle_kit import CHECKOUT, member

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def bundles(
    tmp_path_factory: pytest.TempPathFactory, full_releases: FullReleases
) -> dict[str, BuiltBundle]:
    work = tmp_path_factory.mktemp("bundles")
    return full_releases(work, unprovisioned_site(work / "site.toml", free_port()))


@pytest.fixture(scope="module")
def trust_file(tmp_path_factory: pytest.TempPathFactory, bundles: dict[str, BuiltBundle]) -> Path:
    path = tmp_path_factory.mktemp("trust") / "keyring.json"
    path.write_bytes(member(bundles["v1"].path, "keys/keyring.json"))
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
    with urllib.request.urlopen(frame_request(_api(layout)), timeout=30) as answer:
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
