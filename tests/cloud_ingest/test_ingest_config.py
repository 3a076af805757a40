"""The ingest configuration file (``--config``) and ``--catalog postgresql://...``.

Every setting the service has can come from the TOML file (limits, the sampling
policy sent to devices, retention, the bind address, the shared catalog), flags
win over the file, and a bad file is one clear error naming the setting.  The
end-to-end test runs the installed ``yardlink`` as a user would, on a real
PostgreSQL catalog.
"""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from cloud_ingest.settings import SettingsError, load_settings
from tests.support.ingest_process import YARDLINK
from tests.support.postgres import PostgresServer

FULL_CONFIG = """
version = 1
data_dir = "{data_dir}"
catalog = "{catalog}"
catalog_pool_size = 3
host = "127.0.0.1"
port = {port}
max_batch_bytes = 2097152
max_upload_bytes = 1048576
max_json_bytes = 65536
header_timeout_s = 5.0
max_connections_per_address = 16
upload_expiry_s = 3600.0
raw_request_ttl_s = 7200.0
sweep_interval_s = 30.0

[sampling]
every_n_frames = 250
max_per_hour = 12
low_confidence_below = 0.4
low_confidence_every_n = 5
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ingest.toml"
    path.write_text(text)
    return path


def test_every_setting_comes_from_the_file_and_flags_win(tmp_path: Path) -> None:
    text = FULL_CONFIG.format(
        data_dir=tmp_path / "data",
        catalog="postgresql://ingest:s3cret@db.example:5432/yl",
        port=9000,
    )
    settings = load_settings(_write(tmp_path, text), {"port": 9100, "host": None})
    assert settings.port == 9100  # the flag
    assert settings.host == "127.0.0.1"  # a flag not given leaves the file's value
    assert (settings.max_upload_bytes, settings.max_json_bytes) == (1 << 20, 65536)
    assert (settings.upload_expiry_s, settings.raw_request_ttl_s) == (3600.0, 7200.0)
    assert settings.sampling.every_n_frames == 250 and settings.sampling.max_per_hour == 12
    assert settings.catalog_pool_size == 3
    assert settings.catalog_shown == "postgresql://ingest:***@db.example:5432/yl"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data_dir = ", "not valid TOML"),
        ('data_dir = "/srv/yl"\nmax_upload_bytes = "big"', "setting max_upload_bytes"),
        ('data_dir = "/srv/yl"\nmax_uploads = 3', "setting max_uploads"),
        ('data_dir = "/srv/yl"\ncatalog = "mysql://db/yl"', "setting catalog"),
        ('data_dir = "/srv/yl"\n[sampling]\nmax_per_hour = -1', "setting sampling.max_per_hour"),
        ("port = 1", "setting data_dir"),
    ],
)
def test_a_bad_file_is_one_error_naming_the_setting(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SettingsError) as caught:
        load_settings(path, {})
    assert str(path) in caught.value.detail and expected in caught.value.detail
    assert caught.value.status == 400


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(tmp_path / "absent.toml", {})


@pytest.fixture
async def catalog_url(postgres: PostgresServer) -> AsyncIterator[str]:
    url = await postgres.create_database()
    try:
        yield url
    finally:
        await postgres.drop_database(url)


def _yardlink(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [YARDLINK, *args], capture_output=True, text=True, timeout=60, check=False
    )


async def test_serve_and_provision_from_a_config_file_on_postgresql(
    tmp_path: Path, catalog_url: str
) -> None:
    """``device add --config`` writes the device to PostgreSQL; ``serve --config`` answers it
    with the file's sampling policy; ``--catalog`` on the command line reaches the same one."""
    config = _write(
        tmp_path, FULL_CONFIG.format(data_dir=tmp_path / "data", catalog=catalog_url, port=0)
    )
    added = _yardlink(
        "ingest", "device", "add", "gate-01", "--site", "yard-a", "--config", str(config), "--json"
    )
    assert added.returncode == 0, added.stderr
    token = json.loads(added.stdout)["token"]
    conn = await asyncpg.connect(catalog_url)
    try:
        assert await conn.fetchval("SELECT site_id FROM devices WHERE device_id = 'gate-01'") == (
            "yard-a"
        )
    finally:
        await conn.close()
    other = _yardlink(
        "ingest", "operator", "add", "alice", "--data-dir", str(tmp_path / "other"),
        "--catalog", catalog_url,
    )  # fmt: skip
    assert other.returncode == 0, other.stderr

    server = subprocess.Popen(
        [YARDLINK, "ingest", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        url = ""
        for line in server.stderr:  # the JSON log; ends if the server exits
            entry = json.loads(line)
            if entry.get("msg") == "listening":
                url = entry["url"]
                break
        assert url, "the server exited before listening"
        threading.Thread(target=lambda: [None for _ in server.stderr or ()], daemon=True).start()
        request = urllib.request.Request(
            f"{url}/v1/sync",
            method="POST",
            data=b'{"device_id": "gate-01", "site_id": "yard-a"}',
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        assert answer["sampling"]["every_n_frames"] == 250
        assert answer["sampling"]["max_per_hour"] == 12
    finally:
        server.terminate()
        server.wait(timeout=60)
        if server.stderr is not None:
            server.stderr.close()
    conn = await asyncpg.connect(catalog_url)
    try:  # the handshake was recorded in the shared catalog
        assert await conn.fetchval("SELECT count(*) FROM operators") == 1
        assert await conn.fetchval(
            "SELECT last_sync_at IS NOT NULL FROM devices WHERE device_id = 'gate-01'"
        )
    finally:
        await conn.close()


def test_a_catalog_that_cannot_be_reached_is_one_line(tmp_path: Path) -> None:
    done = _yardlink(
        "ingest", "device", "list", "--data-dir", str(tmp_path / "data"),
        "--catalog", "postgresql://nobody@127.0.0.1:1/none",
    )  # fmt: skip
    assert done.returncode != 0
    assert "cannot open catalog postgresql://nobody@127.0.0.1:1/none" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
