"""The ``yardlink image`` command group: keygen, build, verify, install."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from image_build.layout import ImageState, Layout
from image_build.platforms import Platform, host_platform

__all__ = ["register"]


def _keygen(args: argparse.Namespace) -> int:
    from image_build.build import keyring_envelope
    from sync.shared.signing import Keyring, SigningKey

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate()
    key.save(out / "release.key")
    ring = Keyring(version=1, keys={key.public.keyid: key.public}, issued_at=args.issued_at)
    (out / "keyring.json").write_bytes(keyring_envelope(ring, key))
    print(f"{out / 'release.key'} (private, keep offline) and {out / 'keyring.json'}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from image_build.build import build_from_checkout
    from image_build.install import load_keyring
    from sync.shared.signing import SigningKey

    key = SigningKey.load(Path(args.key))
    built = build_from_checkout(
        Path(args.checkout),
        Path(args.out),
        platform=Platform.parse(args.platform),
        signing_key=key,
        keyring=load_keyring(Path(args.keyring)),
        commit=args.commit,
        counter=args.counter,
        rollback=args.rollback,
        site_config=Path(args.site_config) if args.site_config else None,
        ca_bundle=Path(args.ca_bundle) if args.ca_bundle else None,
    )
    print(
        json.dumps(
            {
                "bundle": str(built.path),
                "manifest": str(built.manifest_path),
                "sha256": built.sha256,
                "bytes": built.size,
                "version": built.manifest.version,
                "counter": built.manifest.header.counter,
            }
        )
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from image_build.install import load_keyring, verify_bundle

    manifest = verify_bundle(
        Path(args.bundle), load_keyring(Path(args.keyring)), platform=Platform.parse(args.platform)
    )
    print(
        f"{args.bundle}: ok (yardlink {manifest.version} for {manifest.platform.value},"
        f" counter {manifest.header.counter}, {len(manifest.files)} files)"
    )
    return 0


def _install(args: argparse.Namespace) -> int:
    from image_build.install import InstallOptions, install, settle_root
    from image_build.service import ProcessService, ServiceManager
    from image_build.systemd_service import SystemdService

    root = Path(args.root)
    layout = Layout(root)
    mode = args.service
    if mode == "auto":
        mode = "systemd" if root == Path("/") and shutil.which("systemctl") else "process"
    service: ServiceManager | None = None
    process: ProcessService | None = None
    if mode == "systemd":
        service = SystemdService(layout)
    elif mode == "process":
        process = ProcessService(layout)
        service = process
    options = InstallOptions(
        root=root,
        platform=Platform.parse(args.platform),
        device_id=args.device_id,
        credentials=Path(args.credentials) if args.credentials else None,
        site_config=Path(args.site_config) if args.site_config else None,
        trust=Path(args.trust) if args.trust else None,
        health_deadline_s=args.health_deadline,
        **({"python": Path(args.python)} if args.python else {}),
    )
    try:
        if layout.base.is_dir():  # else nothing to settle, and a refused bundle leaves no trace
            _, settled = settle_root(layout, service, options.health_deadline_s)
            for note in settled:  # said before the install, which may fail on its own
                print(f"settled: {note}", file=sys.stderr)
        result = install(Path(args.bundle), options, service)
    finally:
        if process is not None:  # a start check, not a supervisor: stop what it started
            process.stop()
    state = ImageState.load(layout.state_file)
    print(
        f"installed yardlink {result.version} in slot {result.slot}"
        f" ({'healthy' if result.healthy else 'not started'}); active: {state.active}"
    )
    return 0


def _settle(args: argparse.Namespace) -> int:
    from image_build.install import settle_root
    from image_build.service import ServiceManager
    from image_build.systemd_service import SystemdService

    root = Path(args.root)
    layout = Layout(root)
    service: ServiceManager | None = None
    if args.service == "systemd" or (
        args.service == "auto" and root == Path("/") and shutil.which("systemctl")
    ):
        service = SystemdService(layout)
    state, settled = settle_root(layout, service, args.health_deadline)
    for note in settled:
        print(f"settled: {note}", file=sys.stderr)
    print(f"current slot: {layout.current_slot()} (active {state.active})")
    return 0


def _disk(args: argparse.Namespace) -> int:
    from image_build.disk import build_disk

    disk = build_disk(
        Path(args.bundle),
        Path(args.out),
        trust=Path(args.trust),
        platform=Platform.parse(args.platform),
        identity=Path(args.identity) if args.identity else None,
        mirror=args.mirror,
    )
    print(
        json.dumps(
            {
                "image": str(disk.image),
                "kernel": str(disk.kernel),
                "initrd": str(disk.initrd),
                "cmdline": disk.cmdline,
            }
        )
    )
    return 0


def _firstboot(args: argparse.Namespace) -> int:
    from image_build.firstboot import apply_identity_file

    applied = apply_identity_file(Path(args.root), Path(args.identity_file))
    print("identity applied" if applied else f"no {args.identity_file}: nothing to do")
    return 0


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = groups.add_parser("image", help="the signed appliance bundle: build, verify, install")
    commands = group.add_subparsers(dest="command", metavar="COMMAND", required=True)

    keygen = commands.add_parser("keygen", help="make a release signing key and its keyring")
    keygen.add_argument("--out", required=True)
    keygen.add_argument("--issued-at", type=int, default=0, help="signed time of the keyring")
    keygen.set_defaults(handler=_keygen)

    build = commands.add_parser("build", help="build yardlink-<version>-<platform>.tar.zst")
    build.add_argument("--out", required=True, help="directory for the bundle")
    build.add_argument("--platform", default=host_platform().value, choices=list(Platform))
    build.add_argument("--key", required=True, help="release private key (PEM)")
    build.add_argument("--keyring", required=True, help="keyring.json the gateways will trust")
    build.add_argument("--checkout", default=".", help="git checkout to build from")
    build.add_argument("--commit", default="HEAD", help="commit to build (not the work tree)")
    build.add_argument("--counter", type=int, help="release counter (default: commit time)")
    build.add_argument("--rollback", action="store_true", help="sign as a permitted rollback")
    build.add_argument("--site-config", help="the site's site.toml to ship (default: template)")
    build.add_argument("--ca-bundle", help="PEM of the cloud's CA, when it uses a private CA")
    build.set_defaults(handler=_build)

    verify = commands.add_parser("verify", help="check a bundle's signature and every hash")
    verify.add_argument("bundle")
    verify.add_argument("--keyring", required=True)
    verify.add_argument("--platform", default=host_platform().value, choices=list(Platform))
    verify.set_defaults(handler=_verify)

    inst = commands.add_parser("install", help="install a bundle into the inactive A/B slot")
    inst.add_argument("bundle")
    inst.add_argument("--root", default="/", help="the gateway's root (default /)")
    inst.add_argument("--device-id", help="this gateway's device id (first install)")
    inst.add_argument("--credentials", help="`yardlink ingest device add --json` output")
    inst.add_argument("--site-config", help="replace the site config")
    inst.add_argument("--trust", help="keyring to trust when the root trusts none yet")
    inst.add_argument("--platform", default=host_platform().value, choices=list(Platform))
    inst.add_argument("--python", help="the gateway's Python 3.11 (default: this one's base)")
    inst.add_argument("--health-deadline", type=float, default=120.0, help="seconds")
    inst.add_argument(
        "--service",
        default="auto",
        choices=["auto", "systemd", "process", "none"],
        help="how to start the new slot: systemctl, a checked child process, or not at all",
    )
    inst.set_defaults(handler=_install)

    disk = commands.add_parser("disk", help="a bootable raw disk image with the bundle in slot A")
    disk.add_argument("bundle")
    disk.add_argument("--out", required=True, help="disk.img to write")
    disk.add_argument("--trust", required=True, help="keyring.json the bundle is signed for")
    disk.add_argument("--platform", default=Platform.X86_64.value, choices=list(Platform))
    disk.add_argument("--identity", help="yardlink-identity.json to put on the boot partition")
    disk.add_argument("--mirror", help="Debian mirror URL (default: mmdebstrap's)")
    disk.set_defaults(handler=_disk)

    firstboot = commands.add_parser("firstboot", help="apply the boot partition's identity file")
    firstboot.add_argument("--root", default="/")
    firstboot.add_argument("--identity-file", required=True)
    firstboot.set_defaults(handler=_firstboot)

    settle_cmd = commands.add_parser("settle", help="revert a switch a killed install left open")
    settle_cmd.add_argument("--root", default="/")
    settle_cmd.add_argument("--health-deadline", type=float, default=120.0, help="seconds")
    settle_cmd.add_argument(
        "--service",
        default="auto",
        choices=["auto", "systemd", "none"],
        help="stop what a killed switch left running through systemctl (auto: on a gateway)",
    )
    settle_cmd.set_defaults(handler=_settle)
