"""``yardlink appliance status|check|support-bundle`` run as real processes against a real
daemon (loopback) and the real ingest service."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

from appliance.config import load_config
from appliance.daemon import Daemon
from appliance.support_bundle import build_bundle
from image_build.site_config import dump_toml
from tests.appliance.daemon_harness import TOKEN
from tests.appliance.tui.tui_harness import NO_MODELS
from tests.sync.ingest_server import DEVICE, SITE, RunningIngest, running_ingest

REPO = Path(__file__).resolve().parents[2]
PLATE_SECRET = "plate-secret-of-this-site-5d1c9a"


def write_site(
    tmp_path: Path, ingest: RunningIngest | None, *, port: int = 0, **overrides: Any
) -> Path:
    data: dict[str, Any] = {
        "version": 1,
        "models_dir": str(REPO / "models"),
        "site": {"device_id": DEVICE, "site_id": SITE, "data_dir": str(tmp_path / "var")},
        "outbox": {"path": str(tmp_path / "var" / "outbox")},
        "local_api": {"port": port, "technician_token": TOKEN},
        "privacy": {"plate_secret": PLATE_SECRET},
        "sources": {"cameras": [{"id": "gate-in"}]},
        "inference": NO_MODELS,
    }
    if ingest is not None:
        data["sync"] = {"cloud_url": ingest.url, "token": ingest.token}
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value}
    path = tmp_path / "site.toml"
    path.write_text(dump_toml(data))
    return path


async def yardlink(*args: str) -> tuple[int, str, str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "yardlink.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    out, err = await asyncio.wait_for(child.communicate(), timeout=90)
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


async def _started(site: Path) -> tuple[Daemon, Path]:
    """A daemon from ``site``; the file is rewritten with the port it listens on."""
    daemon = Daemon(load_config(site))
    await daemon.start()
    port = int(daemon.api_url.rsplit(":", 1)[1])
    text = site.read_text().replace("port = 0", f"port = {port}")
    site.write_text(text)
    return daemon, site


async def test_status_as_text_and_json(tmp_path: Path) -> None:
    async with running_ingest(tmp_path / "cloud") as ingest:
        daemon, site = await _started(write_site(tmp_path, ingest))
        try:
            code, out, _ = await yardlink("appliance", "status", "--config", str(site), "--json")
            assert code == 0, out
            answer = json.loads(out)
            assert answer["status"]["device_id"] == DEVICE
            assert answer["status"]["sync"]["running"] is True
            assert answer["api"] == daemon.api_url
            code, out, _ = await yardlink("appliance", "status", "--config", str(site))
            assert code == 0
            assert out.startswith(f"{DEVICE}  up ")
            for title in ("Alerts", "Link", "Sync", "Inference", "Models", "Outbox"):
                assert f"\n{title}\n" in out
        finally:
            await daemon.stop()
        code, out, err = await yardlink("appliance", "status", "--config", str(site))
        assert code == 2 and "does not answer" in err  # one line, no traceback
        assert "Traceback" not in err


async def test_check_all_ok_then_each_problem_named(tmp_path: Path) -> None:
    async with running_ingest(tmp_path / "cloud") as ingest:
        daemon, site = await _started(write_site(tmp_path, ingest))
        try:
            code, out, _ = await yardlink("appliance", "check", "--config", str(site))
            lines = [line for line in out.splitlines() if line.startswith("[")]
            names = [line.split("]", 1)[1].split(":", 1)[0].strip() for line in lines]
            assert names == [
                "config",
                "data directory",
                "models",
                "clock",
                "local API",
                "cloud",
                "outbox",
            ]
            assert code == 0, out
            assert all(line.startswith("[  ok]") for line in lines), out
            assert "accepted a handshake" in out and "in use by the running daemon" in out
        finally:
            await daemon.stop()
        broken = write_site(tmp_path, None)
        broken.write_text(
            broken.read_text().replace(str(REPO / "models"), str(tmp_path / "no-models"))
            + f'\n[sync]\ncloud_url = "{ingest.url}"\ntoken = "not-the-device-token-0123456789"\n'
        )
        code, out, _ = await yardlink("appliance", "check", "--config", str(broken))
    assert code == 2, out
    assert "[fail] models:" in out and "make models" in out
    assert "[fail] cloud:" in out and "re-provision" in out
    assert "[fail] local API:" in out and "systemctl status" in out
    assert "[  ok] outbox:" in out  # no daemon: opened and closed
    bad = tmp_path / "bad.toml"
    bad.write_text("version = 1\n[site]\ndevice_id = 'x y'\n")
    code, out, _ = await yardlink("appliance", "check", "--config", str(bad))
    assert code == 2 and out.startswith("[fail] config:") and "device_id" in out


async def test_support_bundle_holds_no_secret(tmp_path: Path) -> None:
    async with running_ingest(tmp_path / "cloud") as ingest:
        daemon, site = await _started(write_site(tmp_path, ingest))
        try:
            out_file = tmp_path / "bundle.tar.gz"
            code, out, err = await yardlink(
                "appliance", "support-bundle", "--config", str(site), "--out", str(out_file)
            )
            assert code == 0, err
            members = _members(out_file)
            assert set(members) == {
                "README.txt",
                "config.json",
                "status.json",
                "audit.json",
                "metrics.txt",
                "versions.json",
                "logs.txt",
            }
            assert json.loads(members["status.json"])["device_id"] == DEVICE
            assert "yardlink_" in members["metrics.txt"]
            config = json.loads(members["config.json"])
            assert config["local_api"]["technician_token"] == "<redacted>"
            assert config["sync"]["token"] == "<redacted>"
            assert config["privacy"]["plate_secret"] == "<redacted>"
            _assert_no_secret(out_file, [TOKEN, ingest.token, PLATE_SECRET, *_blob_keys(tmp_path)])
        finally:
            await daemon.stop()


def _blob_keys(tmp_path: Path) -> list[str]:
    keys = [p.read_bytes() for p in (tmp_path / "var" / "blob-keys").glob("*") if p.is_file()]
    return [form for key in keys for form in (key.hex(), base64.b64encode(key).decode())]


def _members(path: Path) -> dict[str, str]:
    with tarfile.open(path) as tar:
        return {
            Path(m.name).name: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def _assert_no_secret(path: Path, secrets: list[str]) -> None:
    raw = path.read_bytes()
    with tarfile.open(path) as tar:
        text = b"".join(tar.extractfile(m).read() for m in tar.getmembers())  # type: ignore[union-attr]
    for secret in secrets:
        assert secret.encode() not in text and secret.encode() not in raw, secret[:6]


def test_secrets_quoted_in_logs_or_status_are_scrubbed(tmp_path: Path) -> None:
    site = write_site(tmp_path, None)
    key = bytes(range(32))
    key_file = tmp_path / "var" / "plate.key"
    key_file.parent.mkdir(parents=True)
    key_file.write_bytes(key)
    site.write_text(site.read_text().replace(f'plate_secret = "{PLATE_SECRET}"', ""))
    config = load_config(site)
    leaky = f"Authorization: Bearer {TOKEN} key={key.hex()} b64={base64.b64encode(key).decode()}"
    body = build_bundle(
        config=config,
        status={"last_error": leaky},
        audit=[{"detail": leaky}],
        metrics=leaky,
        logs=leaky + "\n",
        problems=[],
    )
    out = tmp_path / "b.tar.gz"
    out.write_bytes(body)
    _assert_no_secret(out, [TOKEN, key.hex(), base64.b64encode(key).decode()])
    assert "Authorization: Bearer <redacted>" in _members(out)["logs.txt"]
