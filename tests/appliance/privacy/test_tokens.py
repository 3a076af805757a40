from __future__ import annotations

from pathlib import Path

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
