"""A bootable raw disk image: Debian 12 from Debian's packages, the bundle in slot A.

    p1 yl-boot  vfat  /boot/firmware     the EFI system partition: GRUB (EFI/BOOT/BOOTX64.EFI)
                                         and yardlink-identity.json (first boot)
    p2 yl-root  ext4  /                  Debian + /opt/yardlink/slots/a (slot B empty)
    p3 yl-data  ext4  /var/lib/yardlink  the data dir, on its own partition

The root file system is made by ``mmdebstrap`` (Debian's packages only), the
bundle is verified on this machine, then installed inside the root with the
bundle's own wheels (``chroot``: the venv's paths are those of the gateway),
``yardlink-firstboot.service`` and systemd-networkd (DHCP) are enabled (the
``yardlink-slot`` generator starts ``yardlink@a.service``, the slot ``current``
is on), and the partitions are written with ``mke2fs -d`` and
``mkfs.vfat``/``mcopy`` (no loop devices).  The image boots by itself on UEFI
firmware: GRUB, built inside the root by Debian's ``grub-mkimage`` with its
configuration embedded, sits at the removable-media path of the EFI system
partition (no NVRAM entry needed) and loads the kernel and initrd from the root
partition.  The kernel and initrd are also written beside the image, for a
direct kernel boot.  Needs root, mmdebstrap, e2fsprogs, dosfstools, mtools, fdisk.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from image_build.errors import BuildError
from image_build.install import load_keyring, verify_bundle
from image_build.manifest import BundleManifest
from image_build.platforms import Platform
from image_build.reading import walk_bundle

__all__ = ["DiskImage", "build_disk", "install_in_root"]

PACKAGES = (
    "systemd", "systemd-sysv", "udev", "dbus", "python3", "adduser", "ifupdown",
    "linux-image-amd64", "initramfs-tools", "e2fsprogs", "dosfstools", "ca-certificates",
    "grub-efi-amd64-bin",
)  # fmt: skip
_MB = 1 << 20
_BOOT_MB = 64
_DATA_MB = 512
_CMDLINE = "root=PARTLABEL=yl-root rw console=ttyS0 systemd.show_status=1"
_EFI_LOADER = "EFI/BOOT/BOOTX64.EFI"  # the removable-media path: firmware finds it unaided
_GRUB_MODULES = ("part_gpt", "fat", "ext2", "search", "search_label", "linux", "boot",
                 "echo", "efi_gop")  # fmt: skip
_NETWORK = "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n"
_FSTAB = (
    "PARTLABEL=yl-root / ext4 defaults,errors=remount-ro 0 1\n"
    "PARTLABEL=yl-boot /boot/firmware vfat defaults,nofail 0 2\n"
    "PARTLABEL=yl-data /var/lib/yardlink ext4 defaults,nofail 0 2\n"
)


@dataclass(frozen=True)
class DiskImage:
    image: Path
    kernel: Path
    initrd: Path
    cmdline: str


def _run(*argv: str, what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-6:])
        raise BuildError(f"{what} failed: {tail}")


def _extract_wheels(bundle: Path, manifest: BundleManifest, dest: Path) -> None:
    dest.mkdir(parents=True)
    handles = []

    def sink(name: str) -> object:
        if not name.startswith("wheels/"):
            return None
        handle = (dest / name.removeprefix("wheels/")).open("wb")
        handles.append(handle)
        return handle

    try:
        walk_bundle(bundle, lambda _data: manifest, sink)  # type: ignore[arg-type]
    finally:
        for handle in handles:
            handle.close()


def _bootstrap_and_install(
    rootfs: Path, bundle: Path, trust: Path, manifest: BundleManifest
) -> None:
    work = rootfs / "tmp" / "yl"
    _extract_wheels(bundle, manifest, work / "wheels")
    shutil.copyfile(bundle, work / bundle.name)
    shutil.copyfile(trust, work / "keyring.json")
    pip = sorted((work / "wheels").glob("pip-*.whl"))[-1].name
    inside = "/tmp/yl"
    steps = [
        ("chroot", str(rootfs), "adduser", "--system", "--group", "--home", "/var/lib/yardlink",
         "yardlink"),
        ("chroot", str(rootfs), "python3", f"{inside}/wheels/{pip}/pip", "install", "--quiet",
         "--isolated", "--no-index", "--find-links", f"{inside}/wheels", "--target",
         f"{inside}/site", manifest.requirement),
        ("chroot", str(rootfs), "env", f"PYTHONPATH={inside}/site", "python3", "-m",
         "yardlink.cli", "image", "install", f"{inside}/{bundle.name}", "--root", "/",
         "--service", "none", "--device-id", "unprovisioned", "--trust",
         f"{inside}/keyring.json", "--platform", manifest.platform.value),
    ]  # fmt: skip
    for step in steps:
        _run(*step, what=f"in the root file system: {' '.join(step[2:5])}")
    shutil.rmtree(work)


def install_in_root(
    rootfs: Path, bundle: Path, trust: Path, platform: Platform = Platform.X86_64
) -> BundleManifest:
    """Verify ``bundle`` here, then install it in slot A of a Debian root (``chroot``),
    with the service's user (``image_build.systemd_root`` boots such a root)."""
    manifest = verify_bundle(bundle, load_keyring(trust), platform=platform)
    _bootstrap_and_install(rootfs, bundle, trust, manifest)
    return manifest


def _configure(rootfs: Path) -> None:
    units = rootfs / "etc" / "systemd" / "system"
    firstboot = resources.files("image_build").joinpath("data/yardlink-firstboot.service")
    (units / "yardlink-firstboot.service").write_bytes(firstboot.read_bytes())
    network = rootfs / "etc" / "systemd" / "network"
    network.mkdir(parents=True, exist_ok=True)
    (network / "20-wired.network").write_text(_NETWORK)
    (rootfs / "etc" / "fstab").write_text(_FSTAB)
    (rootfs / "etc" / "hostname").write_text("yardlink-gateway\n")
    (rootfs / "boot" / "firmware").mkdir(parents=True, exist_ok=True)
    # no yardlink@ instance is enabled: the yardlink-slot generator (installed with the
    # unit) starts the one of the slot ``current`` points at
    services = ("yardlink-firstboot.service", "systemd-networkd.service")
    _run("chroot", str(rootfs), "systemctl", "enable", *services, what="systemctl enable")


def _grub_loader(rootfs: Path, kernel: Path, initrd: Path, work: Path) -> Path:
    """GRUB for UEFI with its configuration built in: find the root partition by its
    label, load this kernel and initrd from it, boot (no menu, no timeout)."""
    config = (
        "search --no-floppy --label --set=root yl-root\n"
        f"linux /boot/{kernel.name} console=tty0 {_CMDLINE}\n"
        f"initrd /boot/{initrd.name}\n"
        "boot\n"
    )
    (rootfs / "tmp" / "grub-early.cfg").write_text(config)
    _run("chroot", str(rootfs), "grub-mkimage", "-O", "x86_64-efi", "-d",
         "/usr/lib/grub/x86_64-efi", "-p", "/EFI/BOOT", "-c", "/tmp/grub-early.cfg", "-o",
         "/tmp/BOOTX64.EFI", *_GRUB_MODULES, what="grub-mkimage")  # fmt: skip
    loader = work / "BOOTX64.EFI"
    shutil.move(rootfs / "tmp" / "BOOTX64.EFI", loader)
    (rootfs / "tmp" / "grub-early.cfg").unlink()
    return loader


def _partition_images(
    rootfs: Path, work: Path, identity: Path | None, loader: Path
) -> list[tuple[str, Path]]:
    used = int(subprocess.run(["du", "-sb", str(rootfs)], capture_output=True, text=True,
                              check=True).stdout.split()[0])  # fmt: skip
    root_mb = int(used * 1.3 / _MB) + 256
    data_dir = rootfs / "var" / "lib" / "yardlink"
    data_tree = work / "data-tree"
    shutil.copytree(data_dir, data_tree)
    shutil.rmtree(data_dir)
    data_dir.mkdir(mode=0o700)  # the mount point
    root_img, data_img, boot_img = work / "root.img", work / "data.img", work / "boot.img"
    _run("mke2fs", "-q", "-t", "ext4", "-L", "yl-root", "-d", str(rootfs), str(root_img),
         f"{root_mb}M", what="mke2fs root")  # fmt: skip
    _run("mke2fs", "-q", "-t", "ext4", "-L", "yl-data", "-d", str(data_tree), str(data_img),
         f"{_DATA_MB}M", what="mke2fs data")  # fmt: skip
    _run("mkfs.vfat", "-n", "YL-BOOT", "-C", str(boot_img), str(_BOOT_MB * 1024),
         what="mkfs.vfat")  # fmt: skip
    _run("mmd", "-i", str(boot_img), "::/EFI", "::/EFI/BOOT", what="mmd EFI/BOOT")
    _run("mcopy", "-i", str(boot_img), str(loader), f"::/{_EFI_LOADER}", what="mcopy GRUB")
    if identity is not None:
        _run("mcopy", "-i", str(boot_img), str(identity), "::yardlink-identity.json",
             what="mcopy identity")  # fmt: skip
    return [("yl-boot", boot_img), ("yl-root", root_img), ("yl-data", data_img)]


def _assemble(out: Path, parts: list[tuple[str, Path]]) -> None:
    start_mb = 1
    layout = ["label: gpt"]
    offsets = []
    for name, image in parts:
        size_mb = -(-image.stat().st_size // _MB)
        kind = "U" if name == "yl-boot" else "L"
        layout.append(f"start={start_mb}MiB, size={size_mb}MiB, type={kind}, name={name}")
        offsets.append((start_mb, image))
        start_mb += size_mb
    total_mb = start_mb + 1
    with out.open("wb") as handle:
        handle.truncate(total_mb * _MB)
    result = subprocess.run(["sfdisk", "--quiet", str(out)], input="\n".join(layout) + "\n",
                            capture_output=True, text=True, check=False)  # fmt: skip
    if result.returncode != 0:
        raise BuildError(f"sfdisk failed: {result.stderr.strip()}")
    with out.open("r+b") as disk:
        for offset_mb, image in offsets:
            disk.seek(offset_mb * _MB)
            with image.open("rb") as source:
                shutil.copyfileobj(source, disk, 16 * _MB)


def build_disk(
    bundle: Path,
    out: Path,
    *,
    trust: Path,
    platform: Platform = Platform.X86_64,
    identity: Path | None = None,
    suite: str = "bookworm",
    mirror: str | None = None,
) -> DiskImage:
    if platform is not Platform.X86_64:
        raise BuildError("disk images are built for x86_64 only (aarch64 needs qemu-user)")
    manifest = verify_bundle(bundle, load_keyring(trust), platform=platform)
    with tempfile.TemporaryDirectory(prefix="yardlink-disk-", dir=out.parent) as tmp:
        work = Path(tmp)
        rootfs = work / "rootfs"
        argv = ["mmdebstrap", "--quiet", "--mode=root", "--variant=minbase",
                f"--include={','.join(PACKAGES)}", suite, str(rootfs)]  # fmt: skip
        if mirror:
            argv.append(mirror)
        _run(*argv, what="mmdebstrap")
        _bootstrap_and_install(rootfs, bundle, trust, manifest)
        _configure(rootfs)
        kernel = sorted((rootfs / "boot").glob("vmlinuz-*"))[-1]
        initrd = sorted((rootfs / "boot").glob("initrd.img-*"))[-1]
        kernel_out = out.with_name(out.name + ".vmlinuz")
        initrd_out = out.with_name(out.name + ".initrd")
        shutil.copyfile(kernel, kernel_out)
        shutil.copyfile(initrd, initrd_out)
        loader = _grub_loader(rootfs, kernel, initrd, work)
        parts = _partition_images(rootfs, work, identity, loader)
        _assemble(out, parts)
    return DiskImage(out, kernel_out, initrd_out, _CMDLINE)
