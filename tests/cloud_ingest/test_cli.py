"""``yardlink ingest ...`` run as a user would: the installed console script in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.support.ingest_process import IngestProcess

YARDLINK = str(Path(sys.executable).parent / "yardlink")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [YARDLINK, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_device_and_operator_credentials_round_trip(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    added = _run(
        "ingest", "device", "add", "gate-01", "--site", "yard-a", "--data-dir", data, "--json"
    )
    assert added.returncode == 0, added.stderr
    device = json.loads(added.stdout)
    assert (device["device_id"], device["site_id"]) == ("gate-01", "yard-a")
    assert device["token"].startswith("yld_")
    operator = json.loads(
        _run("ingest", "operator", "add", "alice", "--data-dir", data, "--json").stdout
    )
    assert operator["token"].startswith("ylo_")

    with IngestProcess(tmp_path / "data") as server:

        def sync_status() -> int:
            request = urllib.request.Request(
                f"{server.url}/v1/sync",
                method="POST",
                data=b'{"device_id": "gate-01", "site_id": "yard-a"}',
                headers={
                    "Authorization": f"Bearer {device['token']}",
                    "Content-Type": "application/json",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        assert sync_status() == 200
        revoked = _run("ingest", "device", "revoke", "gate-01", "--data-dir", data)
        assert revoked.returncode == 0, revoked.stderr
        assert sync_status() == 401  # the running server sees the revocation at once


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    assert (
        _run(
            "ingest", "device", "add", "gate-01", "--site", "yard-a", "--data-dir", data
        ).returncode
        == 0
    )
    for args, needle in [
        (
            ("ingest", "device", "add", "gate-01", "--site", "yard-a", "--data-dir", data),
            "already exists",
        ),
        (
            ("ingest", "device", "add", "bad/id", "--site", "yard-a", "--data-dir", data),
            "invalid device id",
        ),
        (("ingest", "device", "revoke", "gate-09", "--data-dir", data), "no device"),
        (("ingest", "serve", "--data-dir", data, "--tls-cert", "/nope.pem"), "go together"),
        (
            (
                "ingest",
                "serve",
                "--data-dir",
                data,
                "--tls-cert",
                "/nope.pem",
                "--tls-key",
                "/nope.key",
                "--port",
                "0",
            ),
            "cannot load TLS",
        ),
        (("ingest", "serve", "--data-dir", data, "--port", "70000"), "invalid setting port"),
    ]:
        result = _run(*args)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr
        error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(error_lines) == 1 and needle in error_lines[0], result.stderr


def test_unusable_data_dir_is_one_line_without_traceback(tmp_path: Path) -> None:
    """A --data-dir that is a file, or a catalog.db that is not SQLite: one clear line."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    not_sqlite = tmp_path / "not-sqlite"
    not_sqlite.mkdir()
    (not_sqlite / "catalog.db").write_bytes(b"this is not an SQLite database\n" * 10)
    for args, needle in [
        (
            ("ingest", "device", "add", "gate-01", "--site", "yard-a", "--data-dir", str(a_file)),
            "not a directory",
        ),
        (("ingest", "operator", "add", "alice", "--data-dir", str(a_file)), "not a directory"),
        (("ingest", "serve", "--data-dir", str(a_file), "--port", "0"), "not a directory"),
        (
            ("ingest", "device", "revoke", "gate-01", "--data-dir", str(not_sqlite)),
            "cannot open catalog",
        ),
        (("ingest", "serve", "--data-dir", str(not_sqlite), "--port", "0"), "cannot open catalog"),
    ]:
        result = _run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
        error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(error_lines) == 1 and needle in error_lines[0], result.stderr
    assert a_file.read_text() == "not a directory\n"  # nothing overwritten
    assert (not_sqlite / "catalog.db").read_bytes().startswith(b"this is not an SQLite")


def test_device_id_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    """The API refuses 'gate-01\\n' (pydantic's pattern); the CLI did not (re.match + '$')."""
    data = str(tmp_path / "data")
    for args in [
        ("ingest", "device", "add", "gate-01\n", "--site", "yard-a", "--data-dir", data),
        ("ingest", "device", "add", "gate-01", "--site", "yard-a\n", "--data-dir", data),
        ("ingest", "operator", "add", "alice\n", "--data-dir", data),
    ]:
        result = _run(*args)
        assert result.returncode == 2, (args, result.stdout)
        assert "invalid" in result.stderr and "Traceback" not in result.stderr
    listed = _run("ingest", "device", "add", "gate-01", "--site", "yard-a", "--data-dir", data)
    assert listed.returncode == 0, listed.stderr  # the refused one left nothing behind


def test_device_rotate_list_and_operator_revoke(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    first = json.loads(
        _run(
            "ingest", "device", "add", "gate-01", "--site", "yard-a", "--data-dir", data, "--json"
        ).stdout
    )
    rotated = _run("ingest", "device", "rotate", "gate-01", "--data-dir", data, "--json")
    assert rotated.returncode == 0, rotated.stderr
    second = json.loads(rotated.stdout)
    assert second["token"] != first["token"] and second["site_id"] == "yard-a"
    listed = _run("ingest", "device", "list", "--data-dir", data, "--json")
    assert [d["device_id"] for d in json.loads(listed.stdout)["devices"]] == ["gate-01"]
    _run("ingest", "operator", "add", "alice", "--data-dir", data)
    assert _run("ingest", "operator", "revoke", "alice", "--data-dir", data).returncode == 0
    missing = _run("ingest", "operator", "revoke", "bob", "--data-dir", data)
    assert missing.returncode != 0 and "bob" in missing.stderr
    assert "Traceback" not in missing.stderr
