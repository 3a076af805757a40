"""``site.toml``: the one schema, its ``YARDLINK_`` overrides and ``check-config``."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from appliance.config import SiteConfig, SourcesSettings, load_config, parse_config
from appliance.errors import ConfigError
from sync.settings import Durability
from tests.appliance.config_harness import EXAMPLE, MINIMAL
from tests.appliance.config_harness import check_config as _check_config
from tests.appliance.config_harness import config_problems as _problems


def test_the_shipped_example_is_valid() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.site.device_id == "gate-01"
    assert config.outbox.durability is Durability.SYNC
    assert config.outbox.max_bytes == 8 << 30


def test_the_shipped_example_shows_every_spool_setting() -> None:
    """An operator starting from the example sees each spool knob (commented or set)."""
    text = EXAMPLE.read_text(encoding="utf-8")
    spool_fields = [name for name in SourcesSettings.model_fields if name.startswith("spool_")]
    assert spool_fields and [name for name in spool_fields if f"{name} =" not in text] == []


def test_defaults_fill_everything_but_identity() -> None:
    config = parse_config(dict(MINIMAL), environ={})
    assert config == SiteConfig.model_validate(MINIMAL)
    assert config.local_api.host == "127.0.0.1"  # local only unless the site says otherwise
    assert config.outbox.durability is Durability.SYNC  # acknowledged means on disk


def test_every_problem_is_listed_with_its_path() -> None:
    data = {
        "version": 1,
        "site": {"device_id": "bad id!", "site_id": "depot"},
        "outbox": {"max_bytes": -1, "durabilty": "sync"},
        "local_api": {"port": 70000},
        "sync": {"bandwidth_cap_bps": 0},
    }
    problems = _problems(data)
    paths = sorted(line.split(":")[0] for line in problems)
    assert paths == [
        "local_api.port",
        "outbox.durabilty",
        "outbox.max_bytes",
        "site.device_id",
        "sync.bandwidth_cap_bps",
    ]
    assert "outbox.durabilty: unknown setting (check the spelling)" in problems
    assert any(p.startswith("local_api.port:") and "(got 70000)" in p for p in problems)


def test_missing_identity_and_wrong_version_are_problems() -> None:
    problems = _problems({"version": 2})
    assert "site: required setting is missing" in problems
    assert any(p.startswith("version:") and "(got 2)" in p for p in problems)
    assert _problems({"site": MINIMAL["site"]}) == ["version: required setting is missing"]


@pytest.mark.parametrize("cap", ["inf", "nan", "0.5", "-8000"])
def test_a_bandwidth_cap_must_be_a_finite_number_of_bits(cap: str) -> None:
    data = dict(MINIMAL, sync=tomllib.loads(f"bandwidth_cap_bps = {cap}"))
    [problem] = _problems(data)
    assert problem.startswith("sync.bandwidth_cap_bps:")


def test_frame_metadata_keys_are_plain_names_and_an_override_replaces_them() -> None:
    data = dict(MINIMAL, local_api={"frame_metadata_keys": ["lane", "Driver Name"]})
    assert _problems(data) == [
        "local_api.frame_metadata_keys.1: String should match pattern"
        " '^[a-z][a-z0-9_]{0,63}$' (got 'Driver Name')"
    ]
    assert parse_config(dict(MINIMAL), environ={}).local_api.frame_metadata_keys == (
        "lane",
        "direction",
        "transaction_id",
    )
    environ = {"YARDLINK_LOCAL_API__FRAME_METADATA_KEYS": '["trip"]'}
    assert parse_config(dict(MINIMAL), environ=environ).local_api.frame_metadata_keys == ("trip",)


def test_environment_overrides_win_and_are_typed() -> None:
    environ = {
        "YARDLINK_OUTBOX__MAX_BYTES": "1073741824",
        "YARDLINK_OUTBOX__DURABILITY": "relaxed",
        "YARDLINK_SYNC__CLOUD_URL": "https://ingest.example.net",
        "YARDLINK_LOCAL_API__PORT": "9000",
        "PATH": "/usr/bin",  # not ours: ignored
        "YARDLINK_NOSECTION": "x",  # no "__": not an override
    }
    config = parse_config(dict(MINIMAL, outbox={"max_bytes": 5 << 30}), environ=environ)
    assert config.outbox.max_bytes == 1 << 30
    assert config.outbox.durability is Durability.RELAXED
    assert str(config.sync.cloud_url).startswith("https://ingest.example.net")
    assert config.local_api.port == 9000


def test_a_bad_environment_override_is_reported_at_its_path() -> None:
    problems = _problems(dict(MINIMAL), {"YARDLINK_OUTBOX__MAX_BYTES": "lots"})
    assert len(problems) == 1 and problems[0].startswith("outbox.max_bytes:")
    assert "'lots'" in problems[0]
    assert problems[0].endswith("(from YARDLINK_OUTBOX__MAX_BYTES)")  # the variable is named
    problems = _problems(dict(MINIMAL), {"YARDLINK_OUTBOX__MAX_BYTEZ": "1"})
    assert problems == [
        "outbox.max_bytez: unknown setting (check the spelling) (from YARDLINK_OUTBOX__MAX_BYTEZ)"
    ]
    problems = _problems(dict(MINIMAL, outbox={"max_bytes": "lots"}))
    assert "(from " not in problems[0]  # set in the file: no variable to name


def test_not_toml_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("version = 1\n[site\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, environ={})


def test_check_config_prints_ok_or_every_problem(tmp_path: Path) -> None:
    ok = _check_config(EXAMPLE)
    assert ok.returncode == 0, ok.stderr
    assert "ok (device gate-01 at site depot-north)" in ok.stdout

    as_json = _check_config(EXAMPLE, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert '"port": 9001' in as_json.stdout  # the environment override is applied

    bad = tmp_path / "site.toml"
    bad.write_text(
        EXAMPLE.read_text(encoding="utf-8")
        .replace("max_bytes = 8589934592", "max_bytes = -5")
        .replace('durability = "sync"', 'durability = "eventually"'),
        encoding="utf-8",
    )
    result = _check_config(bad)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"error: {bad}: 2 problem(s)" in result.stderr
    assert "outbox.max_bytes:" in result.stderr
    assert "outbox.durability:" in result.stderr
