"""sd_notify over a real datagram socket, the daemon's READY=1 as systemd sees it, and
journald's level prefixes."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.readiness import Readiness
from appliance.systemd import SystemdNotifier, readiness_listener
from tests.appliance.daemon_harness import REPO, TOKEN


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5.0)
    yield sock, path
    sock.close()


def _messages(sock: socket.socket, timeout_s: float = 0.2) -> list[str]:
    sock.settimeout(timeout_s)
    received = []
    while True:
        try:
            received.append(sock.recv(4096).decode())
        except TimeoutError:
            return received


def test_ready_status_and_stopping_reach_the_socket(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    readiness = Readiness()
    readiness.on_change(readiness_listener(notifier))
    readiness.set("model gate_ocr missing: /opt/yardlink/current/models/x.onnx")
    readiness.set(None)
    readiness.stopping()
    assert _messages(sock) == [
        "STATUS=not ready: model gate_ocr missing: /opt/yardlink/current/models/x.onnx",
        "READY=1\nSTATUS=ready: required models loaded, outbox open",
        "STOPPING=1\nSTATUS=draining queued frames into the outbox",
    ]


def test_an_abstract_socket_address_is_used_as_systemd_writes_it() -> None:
    name = f"yardlink-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5.0)
        assert SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).notify("READY=1")
        assert sock.recv(64) == b"READY=1"


def test_outside_systemd_nothing_is_sent() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert not notifier.ready("ready")
    assert notifier.watchdog_interval_s is None


def test_the_watchdog_interval_is_half_of_watchdog_usec_and_for_this_process_only() -> None:
    pid = str(os.getpid())
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000"}
    assert SystemdNotifier(env).watchdog_interval_s == 15.0
    assert SystemdNotifier({**env, "WATCHDOG_PID": pid}).watchdog_interval_s == 15.0
    assert SystemdNotifier({**env, "WATCHDOG_PID": "1"}).watchdog_interval_s is None
    assert SystemdNotifier({**env, "WATCHDOG_USEC": "0"}).watchdog_interval_s is None


async def test_the_watchdog_is_fed_from_the_event_loop(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
    task = asyncio.create_task(notifier.watchdog_loop())
    await asyncio.sleep(0.32)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    pings = await asyncio.to_thread(_messages, sock)
    assert 4 <= len(pings) <= 8 and set(pings) == {"WATCHDOG=1"}


def _run_appliance(tmp_path: Path, notify_path: str, models_dir: Path) -> subprocess.Popen[bytes]:
    tmp_path.mkdir()
    var = tmp_path / "var"
    config = tmp_path / "site.toml"
    config.write_text(
        f"""
version = 1
models_dir = "{models_dir}"
[site]
device_id = "gate-01"
site_id = "depot-test"
data_dir = "{var}"
[outbox]
path = "{var / "outbox"}"
[local_api]
port = 0
technician_token = "{TOKEN}"
[[sources.cameras]]
id = "gate-in"
""",
        encoding="utf-8",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "yardlink.cli", "appliance", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "NOTIFY_SOCKET": notify_path},
    )


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.terminate()
    try:
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait_for(sock: socket.socket, prefix: str, timeout_s: float = 90.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        seen += _messages(sock, 0.5)
        if any(message.startswith(prefix) for message in seen):
            return seen
    raise AssertionError(f"no {prefix!r} in {seen}")


def test_the_daemon_says_ready_to_systemd_only_with_its_models_loaded(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    process = _run_appliance(tmp_path / "good", path, REPO / "models")
    try:
        seen = _wait_for(sock, "READY=1")
        assert not any(message.startswith("STATUS=not ready") for message in seen)
    finally:
        assert _stop(process) == 0
    assert any(message.startswith("STOPPING=1") for message in _messages(sock))

    empty = tmp_path / "no-models"
    empty.mkdir()
    process = _run_appliance(tmp_path / "bad", path, empty)
    try:
        seen = _wait_for(sock, "STATUS=not ready: model")
        assert not any(message.startswith("READY=1") for message in seen)
        assert str(empty / "ch_PP-OCRv4_det_infer.onnx") in " ".join(seen)
    finally:
        _stop(process)


@pytest.mark.parametrize(("journal", "prefixes"), [(True, ("<3>{", "<6>{")), (False, ("{", "{"))])
def test_log_lines_carry_the_journald_priority_under_systemd(
    journal: bool, prefixes: tuple[str, str]
) -> None:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    if journal:
        env["JOURNAL_STREAM"] = "8:12345"
    script = (
        "import logging; from yardlink.logs import configure_logging; configure_logging();"
        "logging.getLogger('t').error('boom'); logging.getLogger('t').info('fine')"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    lines = result.stderr.splitlines()
    assert [line[: len(p)] for line, p in zip(lines, prefixes, strict=True)] == list(prefixes)
