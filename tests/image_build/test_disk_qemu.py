"""The bootable disk image, booted under QEMU by UEFI firmware (OVMF) and the image's
own GRUB, as a gateway would boot it from its SSD, until ``/healthz`` answers through
a forwarded port, with the identity from the boot partition applied.

Slow (a Debian root from mmdebstrap, a venv in it, a boot): minutes.  Needs root,
Debian's mmdebstrap, qemu-system-x86, ovmf, e2fsprogs, dosfstools, mtools and fdisk.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from image_build.build import BuiltBundle
from image_build.disk import build_disk
from sync.shared.signing import Keyring, SigningKey
from tests.image_build._harness import TOKEN, free_port, unprovisioned_site
from tests.image_build.bundle_kit import bundle_factory, member

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

OVMF = Path("/usr/share/OVMF")  # Debian's ovmf: UEFI firmware for QEMU


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return int(r.status), r.read()
    except OSError:
        return 0, b""


def test_the_disk_image_boots_and_serves(
    tmp_path: Path,
    release_key: SigningKey,
    keyring: Keyring,
    project_wheel: Path,
    full_wheelhouse: Path,
) -> None:
    site = unprovisioned_site(tmp_path / "site.toml", 8477, host="0.0.0.0")  # inside the VM
    bundle: BuiltBundle = bundle_factory(release_key, keyring, project_wheel, full_wheelhouse)(
        tmp_path / "out", counter=100, site_config=site
    )
    trust = tmp_path / "keyring.json"
    trust.write_bytes(member(bundle.path, "keys/keyring.json"))
    identity = tmp_path / "identity.json"
    identity.write_text(json.dumps({"device_id": "gate-42", "token": "device-token-42"}))
    disk = build_disk(bundle.path, tmp_path / "disk.img", trust=trust, identity=identity)

    port = free_port()
    console = tmp_path / "console.log"
    nvram = tmp_path / "OVMF_VARS.fd"  # the firmware's variables: a copy of its own
    shutil.copyfile(OVMF / "OVMF_VARS.fd", nvram)
    # TCG with every CPU feature: numpy and onnxruntime need more than qemu64, and KVM
    # nested in this VM refused -cpu host
    accel = ["-accel", "tcg,thread=multi", "-cpu", "max"]
    qemu = subprocess.Popen(
        [
            "qemu-system-x86_64",
            *accel,
            "-m",
            "2048",
            "-smp",
            "2",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            f"file:{console}",
            "-drive",
            f"if=pflash,format=raw,readonly=on,file={OVMF / 'OVMF_CODE.fd'}",
            "-drive",
            f"if=pflash,format=raw,file={nvram}",
            "-drive",
            f"file={disk.image},format=raw,if=virtio",
            "-netdev",
            f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:8477",
            "-device",
            "virtio-net-pci,netdev=n0",
        ],  # fmt: skip
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 1200  # emulated: the appliance's start takes minutes
        status = 0
        while status != 200:
            assert qemu.poll() is None, console.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, console.read_text(errors="replace")[-4000:]
            time.sleep(2)
            status, _ = _get(f"http://127.0.0.1:{port}/healthz")
        log = console.read_text(errors="replace")
        assert "Linux version" in log and disk.cmdline in log  # GRUB booted the kernel
        code, body = _get(f"http://127.0.0.1:{port}/v1/status", TOKEN)
        assert code == 200
        assert json.loads(body)["device_id"] == "gate-42"  # the boot partition's identity
    finally:
        qemu.kill()
        qemu.wait()
