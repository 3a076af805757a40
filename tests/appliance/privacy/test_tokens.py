from __future__ import annotations

import resource
import signal
from pathlib import Path

import pytest

from appliance.errors import ConfigError
from appliance.privacy.tokens import PlateTokenizer, load_plate_key


def test_tokens_are_stable_per_site_and_ignore_spacing(tmp_path: Path) -> None:
    key = load_plate_key(None, tmp_path / "plate.key")
    assert load_plate_key(None, tmp_path / "plate.key") == key
    site = PlateTokenizer(key)
    other = PlateTokenizer(b"another-site-key-0123456789")
    assert site.token("AB12 CDE") == site.token("ab12cde")
    assert site.token("AB12 CDE") != site.token("AB12 CDF")
    assert site.token("AB12 CDE") != other.token("AB12 CDE")
    assert "AB12" not in site.token("AB12 CDE")
    assert (tmp_path / "plate.key").stat().st_mode & 0o077 == 0


def test_a_plate_key_cut_short_by_a_full_disk_is_never_left_behind(tmp_path: Path) -> None:
    """The file size cap stands in for a full disk: the 32-byte key is written in part.
    A short key file left behind would stop every later start ("shorter than 16
    bytes"), or, at 16 bytes or more, silently become the site's key."""
    key_file = tmp_path / "plate.key"
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (10, hard))
    try:
        with pytest.raises(ConfigError, match="cannot create the plate key"):
            load_plate_key(None, key_file)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert list(tmp_path.iterdir()) == []  # no key, no temp file
    key = load_plate_key(None, key_file)  # room again: a whole key
    assert len(key) == 32 and key_file.read_bytes() == key
