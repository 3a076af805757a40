"""``yardlink models keygen|keyring|package|sign|verify`` through the real command root."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from sync.shared.signing import Envelope
from tests.support.releases import DEVICE_CLASS, MODELS_DIR, ReleaseKit
from yardlink.cli import main


def _keygen(out: Path) -> tuple[Path, Path]:
    assert main(["models", "keygen", "--out", str(out)]) == 0
    (private,) = out.glob("*.key")
    (public,) = out.glob("*.pub.json")
    return private, public


def test_keys_keyring_sign_verify_and_rotation(
    release_kit: ReleaseKit, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    old_key, old_pub = _keygen(tmp_path / "old")
    assert stat.S_IMODE(old_key.stat().st_mode) == 0o600
    ring1 = tmp_path / "keyring-1.json"
    argv = ["models", "keyring", "--out", str(ring1), "--add", str(old_pub)]
    assert main([*argv, "--sign-with", str(old_key)]) == 0
    manifest = tmp_path / "m.json"
    archive = str(release_kit.build.archive)
    sign = ["models", "sign", archive, "--counter", "5", "--canary-site", "wh-nyc-01"]
    assert main([*sign, "--key", str(old_key), "--out", str(manifest)]) == 0
    signed = Envelope.parse(manifest.read_bytes()).signed
    assert (signed["counter"], signed["rollout"]["canary_sites"]) == (5, ["wh-nyc-01"])
    verify = ["models", "verify", archive, "--manifest", str(manifest), "--device-class"]
    assert main([*verify, DEVICE_CLASS, "--keyring", str(ring1)]) == 0
    assert "ok: gate-ocr" in capsys.readouterr().out
    assert main([*verify, "coral-v2", "--keyring", str(ring1)]) == 3
    assert "refused (device_class)" in capsys.readouterr().err
    assert main([*verify, DEVICE_CLASS, "--keyring", str(ring1), "--active-counter", "5"]) == 3
    assert "refused (counter_not_above)" in capsys.readouterr().err

    # Rotation: a new key, the old one revoked, signed by both.
    new_key, new_pub = _keygen(tmp_path / "new")
    old_id = json.loads(old_pub.read_text())["keyid"]
    ring2 = tmp_path / "keyring-2.json"
    rotate = ["models", "keyring", "--out", str(ring2), "--base", str(ring1)]
    rotate += ["--add", str(new_pub), "--revoke", old_id]
    assert main([*rotate, "--sign-with", str(new_key)]) == 2  # the old ring's key must sign
    assert "trusted" in capsys.readouterr().err
    assert main([*rotate, "--sign-with", str(old_key), "--sign-with", str(new_key)]) == 0
    assert Envelope.parse(ring2.read_bytes()).signed["revoked"] == [old_id]
    assert main([*verify, DEVICE_CLASS, "--keyring", str(ring2)]) == 3
    assert "refused (revoked_key)" in capsys.readouterr().err
    assert main([*sign, "--key", str(new_key), "--out", str(manifest)]) == 0
    assert main([*verify, DEVICE_CLASS, "--keyring", str(ring2)]) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            [
                "models",
                "package",
                "/nonexistent",
                "--name",
                "x",
                "--version",
                "1",
                "--device-class",
                "x86-cpu",
                "--out",
                "/tmp/never.tar",
            ],
            "not found",
        ),
        (
            [
                "models",
                "package",
                str(MODELS_DIR),
                "--name",
                "../x",
                "--version",
                "1",
                "--device-class",
                "x86-cpu",
                "--out",
                "/tmp/never.tar",
            ],
            "bad release fields",
        ),
        (
            [
                "models",
                "package",
                str(MODELS_DIR),
                "--name",
                "x",
                "--version",
                "1",
                "--model",
                "det",
                "--device-class",
                "x86-cpu",
                "--out",
                "/tmp/never.tar",
            ],
            "ROLE=FILE",
        ),
        (
            ["models", "sign", "/nonexistent.tar", "--key", "/nonexistent.key", "--counter", "1"],
            "cannot read private key",
        ),
        (
            [
                "models",
                "verify",
                "/nonexistent.tar",
                "--manifest",
                "/nonexistent.json",
                "--keyring",
                "/k",
                "--device-class",
                "x",
            ],
            "cannot read manifest",
        ),
    ],
)
def test_bad_input_is_one_error_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_sign_refuses_a_bad_rollout_plan(
    release_kit: ReleaseKit, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    key, _ = _keygen(tmp_path)
    argv = ["models", "sign", str(release_kit.build.archive), "--key", str(key), "--counter", "1"]
    assert main([*argv, "--stages", "50,10"]) == 2
    assert "bad rollout plan" in capsys.readouterr().err


def test_package_records_golden_outputs_and_a_report(release_kit: ReleaseKit):
    contents, report = release_kit.build.contents, release_kit.build.report
    (case,) = contents.golden
    # The synthetic golden frame holds a container code and a plate; the real model
    # read both at packaging time, and those readings are what a device must reproduce.
    assert report["truths"] == 2 and report["truths_found"] == 2
    assert {d.kind for d in case.expected} >= {"container_code", "plate"}
    assert contents.models == {
        "det": "model/ch_PP-OCRv4_det_infer.onnx",
        "rec": "model/ch_PP-OCRv4_rec_infer.onnx",
    }
