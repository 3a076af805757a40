"""A whole yard on one machine: the real cloud ingest service and a real appliance, each a
process that can be SIGKILLed, with the link emulator (``sync.linkemu``) between them.

``make demo`` (``yardlink.demo``) and the end-to-end tests (``tests/test_end_to_end.py``)
both stand on this module, so what the demo shows is what the tests prove.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow.parquet as pq

__all__ = [
    "ApplianceProcess",
    "IngestProcess",
    "StackError",
    "find_in_clear",
    "free_port",
    "lake_rows",
    "wait_port",
    "write_site_toml",
]

YARDLINK = [sys.executable, "-m", "yardlink.cli"]


class StackError(RuntimeError):
    """A process of the stack did not start or answer; the message says which and why."""


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(
    port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0
) -> None:
    """Wait until something listens on ``port``; ``StackError`` if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{proc.args!r} exited with code {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise StackError(f"nothing listens on port {port} after {timeout:.0f} s")


def _run_json(args: list[str]) -> dict[str, Any]:
    done = subprocess.run([*YARDLINK, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StackError(f"yardlink {' '.join(args[:3])} failed: {done.stderr.strip()}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


class _Process:
    """A child process whose output goes to a log file; SIGKILL or SIGTERM it at will."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self._log: IO[bytes] | None = None

    def _spawn(self, args: list[str], *, stdout_pipe: bool = False) -> subprocess.Popen[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return self.proc

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no flush; what survives is what was durable."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
            self.kills += 1
        self._close_log()

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM and wait (the process drains and closes); SIGKILL if it hangs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def _close_log(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None


class IngestProcess(_Process):
    """``yardlink ingest serve`` on a fixed loopback port (the same port after a restart)."""

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        super().__init__(data_dir.parent / "logs" / "ingest.log")
        self.data_dir = data_dir
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_device(self, device_id: str, site_id: str) -> str:
        """Register a device; returns its token."""
        created = _run_json(
            ["ingest", "device", "add", device_id, "--site", site_id]
            + ["--data-dir", str(self.data_dir), "--json"]
        )
        return str(created["token"])

    def add_operator(self, name: str) -> str:
        created = _run_json(
            ["ingest", "operator", "add", name, "--data-dir", str(self.data_dir), "--json"]
        )
        return str(created["token"])

    def start(self, timeout: float = 60.0) -> None:
        proc = self._spawn(
            [*YARDLINK, "ingest", "serve", "--data-dir", str(self.data_dir)]
            + ["--port", str(self.port)]
        )
        wait_port(self.port, proc, timeout)

    def request_raw(self, operator_token: str, device_id: str, seq: int) -> dict[str, Any]:
        """An operator asks for the raw frame of one event (``POST /v1/raw-requests``)."""
        return _http_json(
            f"{self.url}/v1/raw-requests",
            operator_token,
            method="POST",
            body={"device_id": device_id, "seq": seq},
        )

    def raw_request(self, operator_token: str, request_id: str) -> dict[str, Any]:
        return _http_json(f"{self.url}/v1/raw-requests/{request_id}", operator_token)


def _http_json(
    url: str,
    token: str,
    *,
    method: str = "GET",
    body: dict[str, Any] | bytes | None = None,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One request with a bearer token; the JSON answer, or ``StackError`` saying why not."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            result: dict[str, Any] = json.loads(answer.read())
            return result
    except urllib.error.HTTPError as error:
        raise StackError(f"{method} {url}: {error.code} {error.read()[:300]!r}") from error
    except (urllib.error.URLError, OSError) as error:
        raise StackError(f"{method} {url}: {error}") from error


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    raise TypeError(f"no TOML form for {value!r}")


def write_site_toml(path: Path, config: dict[str, Any]) -> Path:
    """Write a site.toml from ``{"version": 1, "section": {...}, ...}``; a list of dicts
    becomes an array of tables (``[[sources.cameras]]``), a nested dict a sub-table."""
    lines: list[str] = []

    def table(name: str, body: dict[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, dict | list)}
        lines.append(f"\n[{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in scalars.items())
        for key, value in body.items():
            if isinstance(value, dict):
                table(f"{name}.{key}", value)
            elif isinstance(value, list):
                for item in value:
                    lines.append(f"\n[[{name}.{key}]]")
                    lines.extend(f"{k} = {_toml_value(v)}" for k, v in item.items())

    for key, value in config.items():
        if not isinstance(value, dict):
            lines.insert(0, f"{key} = {_toml_value(value)}")
    for key, value in config.items():
        if isinstance(value, dict):
            table(key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


class ApplianceProcess(_Process):
    """``yardlink appliance run --config site.toml``; ``start`` waits for its ready line."""

    def __init__(self, config_path: Path, technician_token: str) -> None:
        super().__init__(config_path.parent / "logs" / "appliance.log")
        self.config_path = config_path
        self.token = technician_token
        self.api_url = ""

    def start(self, timeout: float = 180.0) -> None:
        proc = self._spawn(
            [*YARDLINK, "appliance", "run", "--config", str(self.config_path)], stdout_pipe=True
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()  # the first stdout line is the ready line
            if line.strip():
                break
        if not line.strip():
            raise StackError(
                f"the appliance did not start (exit code {proc.poll()}); see {self.log_path}"
            )
        self.api_url = json.loads(line)["api"]

    def get(self, path: str) -> dict[str, Any]:
        return _http_json(f"{self.api_url}{path}", self.token)

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return _http_json(f"{self.api_url}{path}", self.token, method="POST", body=body or {})

    def push_frame(
        self, camera_id: str, jpeg: bytes, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """POST one JPEG; ``metadata`` goes in ``X-Frame-Metadata`` (it rides to the lake)."""
        url = f"{self.api_url}/v1/frames?camera={camera_id}"
        headers = {"X-Frame-Metadata": json.dumps(metadata)} if metadata else {}
        return _http_json(
            url, self.token, method="POST", body=jpeg, content_type="image/jpeg", headers=headers
        )


def lake_rows(data_dir: Path, stream: str = "events") -> list[dict[str, Any]]:
    """Every row in the lake for ``stream`` (duplicates kept, so a caller can see them).

    Hidden files are skipped, as DuckDB, Spark and pyarrow skip them: the ingest service
    writes each file as ``.tmp-...parquet`` first and renames it into place."""
    rows: list[dict[str, Any]] = []
    for path in sorted((data_dir / "lake" / stream).rglob("*.parquet")):
        if path.name.startswith("."):
            continue  # a temp file being written (or left by a crash): not in the lake yet
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def _parquet_text(path: Path) -> bytes:
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as error:  # noqa: BLE001 - a partial file is scanned as bytes only
        return f"unreadable parquet: {error}".encode()
    return json.dumps(rows, default=str).encode()


def _files(root: Path) -> Iterator[Path]:
    for dirpath, _, names in os.walk(root):
        for name in names:
            yield Path(dirpath) / name


def find_in_clear(root: Path, secrets: Iterable[str]) -> list[str]:
    """Where any of ``secrets`` (plate numbers) appears in clear under ``root``.

    Every file is scanned byte for byte; Parquet files (zstd-compressed, so a byte scan
    would miss text) are also decoded and their values scanned.  Each secret is looked for
    as written and without spaces.  Returns ``"<file>: <secret>"`` findings.
    """
    needles: dict[bytes, str] = {}
    for secret in secrets:
        for form in {secret, secret.replace(" ", "")}:
            if len(form) >= 4:
                needles[form.encode()] = secret
    findings: list[str] = []
    for path in _files(root):
        data = path.read_bytes()
        if path.suffix == ".parquet":
            data += b"\n" + _parquet_text(path)
        findings.extend(f"{path}: {secret}" for needle, secret in needles.items() if needle in data)
    return findings
