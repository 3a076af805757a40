"""``yardlink ingest models ...`` as an operator runs it: the console script in a subprocess,
on a release signed with ``yardlink models sign``."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.support.model_registry import Kit

YARDLINK = str(Path(sys.executable).parent / "yardlink")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [YARDLINK, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_publish_and_drive_a_rollout_from_the_cli(tmp_path: Path, kit: Kit) -> None:
    data = str(tmp_path / "data")
    keys = tmp_path / "keys"
    # a signing key the service does not trust: its manifest is refused with one line
    assert _run("models", "keygen", "--out", str(keys)).returncode == 0
    (stranger_key,) = keys.glob("*.key")
    archive = tmp_path / "release.tar"
    archive.write_bytes(kit.build.archive.read_bytes())
    signed = _run(
        "models",
        "sign",
        str(archive),
        "--key",
        str(stranger_key),
        "--counter",
        "3",
        "--canary-site",
        "wh-nyc-01",
        "--stages",
        "50,100",
    )
    assert signed.returncode == 0, signed.stderr
    stranger_manifest = tmp_path / "release.tar.manifest.json"
    assert stranger_manifest.is_file()
    keyring = str(kit.keyring_file)
    refused = _run(
        "ingest",
        "models",
        "publish",
        str(archive),
        "--manifest",
        str(stranger_manifest),
        "--keyring",
        keyring,
        "--data-dir",
        data,
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: untrusted_key:"), refused.stderr
    assert "Traceback" not in refused.stderr

    trusted = tmp_path / "trusted.manifest.json"
    trusted.write_bytes(kit.signed)
    publish = [
        "ingest",
        "models",
        "publish",
        str(archive),
        "--manifest",
        str(trusted),
        "--keyring",
        keyring,
        "--data-dir",
        data,
    ]
    first = _run(*publish)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"published gate-ocr {kit.manifest.version} counter 2")

    version = kit.manifest.version
    started = _run(
        "ingest", "models", "rollout", "start", "gate-ocr", version, "--data-dir", data, "--json"
    )
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["phase"] == "canary"
    aborted = _run(
        "ingest",
        "models",
        "rollout",
        "abort",
        "gate-ocr",
        version,
        "--reason",
        "bad lane 3",
        "--data-dir",
        data,
    )
    assert aborted.returncode == 0 and "aborted" in aborted.stdout
    assert "reason: bad lane 3" in aborted.stdout
    with sqlite3.connect(tmp_path / "data" / "catalog.db") as db:
        audit = db.execute("SELECT actor, action FROM audit_log ORDER BY event_id").fetchall()
    assert audit == [
        ("cli", "model.publish"),
        ("cli", "rollout.start"),
        ("cli", "rollout.abort"),
    ]
