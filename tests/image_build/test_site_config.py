"""The site config an install (or a first boot) writes: the device token in a 0600 file
of its own named by ``[sync] token_file``, never inline in ``site.toml``; read back by
the appliance's own loader; an older ``site.toml`` with the token inline is moved over."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from appliance.config import load_config
from image_build.errors import InstallError
from image_build.firstboot import apply_identity_file
from image_build.layout import Layout
from image_build.site_config import (
    DeviceIdentity,
    current_identity,
    render_site_config,
    write_site_config,
)

BASE = b"""version = 1
[site]
device_id = "placeholder"
site_id = "depot-north"
data_dir = "/var/lib/yardlink"
[sync]
cloud_url = "https://ingest.example.net"
[[sources.cameras]]
id = "gate-in"
"""
TOKEN = "yld_device-token-for-tests-3fQ8"


def _install(layout: Layout, base: bytes, identity: DeviceIdentity) -> None:
    rendered = render_site_config(
        base,
        identity,
        data_dir=layout.data_dir,
        models_dir=layout.current / "models",
        token_file=layout.token_file,
    )
    write_site_config(
        layout.site_config,
        rendered,
        token_file=layout.token_file,
        token=identity.token,
        owner=None,
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_token_goes_to_its_own_file_and_the_appliance_reads_it(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    _install(layout, BASE, DeviceIdentity("gate-07", TOKEN))

    text = layout.site_config.read_text(encoding="utf-8")
    assert TOKEN not in text
    assert f'token_file = "{layout.token_file}"' in text
    assert layout.token_file.read_text(encoding="utf-8").strip() == TOKEN
    assert _mode(layout.token_file) == 0o600 and _mode(layout.site_config) == 0o600
    config = load_config(layout.site_config, environ={})
    assert config.site.device_id == "gate-07"
    assert config.sync.token is not None and config.sync.token.get_secret_value() == TOKEN
    identity = current_identity(layout.site_config)
    assert identity is not None and (identity.device_id, identity.token) == ("gate-07", TOKEN)


def test_an_older_site_config_with_the_token_inline_is_moved_to_the_token_file(
    tmp_path: Path,
) -> None:
    layout = Layout(tmp_path)
    older = BASE.replace(b"[sync]\n", f'[sync]\ntoken = "{TOKEN}"\n'.encode())
    layout.etc.mkdir(parents=True)
    layout.site_config.write_bytes(older)
    identity = current_identity(layout.site_config)  # what an update without credentials uses
    assert identity is not None and identity.token == TOKEN

    _install(layout, older, DeviceIdentity("gate-07", identity.token))

    assert TOKEN not in layout.site_config.read_text(encoding="utf-8")
    config = load_config(layout.site_config, environ={})
    assert config.sync.token is not None and config.sync.token.get_secret_value() == TOKEN


def test_without_a_token_no_token_file_is_written(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    _install(layout, BASE, DeviceIdentity("gate-07", None))
    assert not layout.token_file.exists()
    assert "token_file" not in layout.site_config.read_text(encoding="utf-8")
    assert load_config(layout.site_config, environ={}).sync.token is None


def test_a_config_the_appliance_would_refuse_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    layout = Layout(tmp_path)
    bad = BASE.replace(b"[sync]\n", b"[sync]\nbatch_max_records = 0\n")
    with pytest.raises(InstallError, match="would not start the appliance"):
        render_site_config(
            bad,
            DeviceIdentity("gate-07", TOKEN),
            data_dir=layout.data_dir,
            models_dir=layout.current / "models",
            token_file=layout.token_file,
        )
    assert not layout.etc.exists()


def test_first_boot_writes_the_identity_file_into_the_config_and_the_token_file(
    tmp_path: Path,
) -> None:
    layout = Layout(tmp_path)
    _install(layout, BASE, DeviceIdentity("image-default", None))
    boot = tmp_path / "boot"
    boot.mkdir()
    identity_file = boot / "yardlink-identity.json"
    identity_file.write_text(json.dumps({"device_id": "gate-42", "token": TOKEN}))

    assert apply_identity_file(tmp_path, identity_file)

    assert not identity_file.exists() and (boot / "yardlink-identity.json.applied").is_file()
    assert TOKEN not in layout.site_config.read_text(encoding="utf-8")
    assert _mode(layout.token_file) == 0o600
    config = load_config(layout.site_config, environ={})
    assert config.site.device_id == "gate-42"
    assert config.sync.token is not None and config.sync.token.get_secret_value() == TOKEN
    assert not apply_identity_file(tmp_path, identity_file)  # applied once
