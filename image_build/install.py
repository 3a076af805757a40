"""Installing a bundle into the inactive A/B slot, with a health-gated switch.

Order (docs/IMAGE.md): verify the whole bundle (signature, counter, platform,
every size and sha256) without writing a byte; store the advanced signed-time
floor; fill the inactive slot (files checked again as written, an offline venv
from the wheelhouse), mark it complete; record the trial; write the units
(``yardlink@.service``, one instance per slot, and the generator that boots the
slot ``current`` points at), point ``current`` at the new slot, hand over to it
(a standby start: the old appliance serves until the new one has loaded its
models; ``ServiceManager.hand_over``) and keep it only if
it reports healthy within the deadline, else point back (the old one still
serving when the new one never took over, else started again).

A SIGKILL at any step leaves ``current`` on a complete slot: the new slot is
only pointed at once complete, and a trial left unconfirmed by a killed
installer is reverted by the next ``yardlink image install``/``settle``, which
then leave only the current slot's appliance running and no switch file behind
(``ServiceManager.settle_instances``); a reboot before either boots the last
confirmed slot and settles there (``image_build.switch``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from image_build.errors import BundleRefused, InstallError
from image_build.layout import ImageState, Layout
from image_build.manifest import BundleManifest, verify_manifest
from image_build.platforms import Platform, host_platform
from image_build.reading import walk_bundle
from image_build.service import ServiceManager
from image_build.site_config import (
    DeviceIdentity,
    current_identity,
    read_credentials,
    render_site_config,
    write_site_config,
)
from image_build.switch import (
    InstallResult,
    Release,
    install_lock,
    settle,
    settle_instances,
    settle_root,
    switch_slot,
)
from image_build.units import write_units
from sync.shared.durable_file import fsync_directory, replace_durably
from sync.shared.signing import Envelope, Keyring, TimeFloor, VerificationError

__all__ = [
    "InstallOptions",
    "InstallResult",
    "install",
    "settle",
    "settle_root",
    "verify_bundle",
    "write_units",
]

SERVICE_USER = "yardlink"  # the unit's User=


@dataclass(frozen=True)
class InstallOptions:
    root: Path
    platform: Platform = field(default_factory=host_platform)
    device_id: str | None = None
    credentials: Path | None = None
    site_config: Path | None = None
    trust: Path | None = None  # a keyring to trust on a gateway that trusts none yet
    python: Path = field(default_factory=lambda: Path(getattr(sys, "_base_executable", "")))
    health_deadline_s: float = 120.0


def load_keyring(path: Path) -> Keyring:
    """A keyring file: the signed envelope a bundle carries in ``keys/keyring.json``."""
    try:
        return Keyring.from_document(Envelope.parse(path.read_bytes()).signed)
    except OSError as exc:
        raise InstallError(f"cannot read keyring {path}: {exc}") from exc
    except VerificationError as exc:
        raise InstallError(f"{path} is not a keyring: {exc}") from exc


def verify_bundle(
    bundle: Path,
    keyring: Keyring,
    *,
    platform: Platform,
    floor: TimeFloor | None = None,
    active_counter: int | None = None,
) -> BundleManifest:
    """Read the whole bundle and check it; write nothing."""
    floor = floor or TimeFloor()

    def trust(data: bytes) -> BundleManifest:
        return verify_manifest(
            data, keyring, floor, active_counter=active_counter, platform=platform
        )[0]

    return walk_bundle(bundle, trust, lambda _name: None)


def install(bundle: Path, options: InstallOptions, service: ServiceManager | None) -> InstallResult:
    layout = Layout(options.root)
    keyring = _trusted_keyring(layout, options)
    before = ImageState.load(layout.state_file)
    manifest = verify_bundle(
        bundle,
        keyring,
        platform=options.platform,
        floor=before.floor,
        active_counter=before.counter,
    )  # pass 1: nothing is written (not even a lock file) before this returns
    _check_python(options.python, manifest.python)
    identity = _identity(layout, options)
    _service_user(layout)  # refuse now, not after filling a slot
    with install_lock(layout):
        state, settled = settle(layout, ImageState.load(layout.state_file))
        settled += settle_instances(service, options.health_deadline_s)
        if (state.counter, state.floor) != (before.counter, before.floor):
            manifest = verify_bundle(  # another install ran meanwhile: check against it
                bundle,
                keyring,
                platform=options.platform,
                floor=state.floor,
                active_counter=state.counter,
            )
        state = replace(state, floor=state.floor.advanced(manifest.header))
        state.save(layout.state_file)  # the floor is stored before the bundle is used
        previous = layout.current_slot()
        slot = _fill_slot(layout, bundle, keyring, manifest, state, options, previous)
        _install_config(layout, slot, identity, options)
        release = Release(manifest.version, manifest.header.counter)
        deadline_s = options.health_deadline_s
        result = switch_slot(layout, slot, previous, release, state, service, deadline_s)
        return replace(result, settled=tuple(settled))


def _trusted_keyring(layout: Layout, options: InstallOptions) -> Keyring:
    if layout.keyring_file.is_file():
        return load_keyring(layout.keyring_file)
    if options.trust is None:
        raise InstallError(
            f"{layout.root} trusts no release key yet: pass --trust KEYRING"
            " (keyring.json from the release team)"
        )
    return load_keyring(options.trust)


def _check_python(python: Path, wanted: str) -> None:
    try:
        found = subprocess.run(
            [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise InstallError(f"cannot run the gateway's Python {python}: {exc}") from exc
    if found != wanted:
        raise BundleRefused("python", f"the bundle is for Python {wanted}, {python} is {found}")


def _identity(layout: Layout, options: InstallOptions) -> DeviceIdentity:
    existing = current_identity(layout.site_config)
    device_id = options.device_id or (existing.device_id if existing else None)
    if device_id is None:
        raise InstallError("a first install needs --device-id (and --credentials to sync)")
    if options.credentials is not None:
        return read_credentials(options.credentials, device_id)
    token = existing.token if existing and existing.device_id == device_id else None
    return DeviceIdentity(device_id, token)


class _Sinks:
    """Files of one slot, opened as their members arrive (only after pass 1 passed)."""

    def __init__(self, slot_dir: Path) -> None:
        self.slot_dir = slot_dir
        self.open: list[BinaryIO] = []

    def __call__(self, name: str) -> BinaryIO:
        self.close()
        path = self.slot_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("wb")
        self.open.append(handle)
        return handle

    def close(self) -> None:
        for handle in self.open:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        self.open.clear()


def _fill_slot(
    layout: Layout,
    bundle: Path,
    keyring: Keyring,
    manifest: BundleManifest,
    state: ImageState,
    options: InstallOptions,
    previous: str | None,
) -> str:
    slot = "b" if previous == "a" else "a"
    slot_dir = layout.slot(slot)
    if layout.current_slot() == slot:
        raise InstallError(f"refusing to overwrite slot {slot}: it is current")
    shutil.rmtree(slot_dir, ignore_errors=True)
    slot_dir.mkdir(parents=True)
    first: bytes | None = None

    def same_manifest(data: bytes) -> BundleManifest:
        nonlocal first
        first = data
        checked, _ = verify_manifest(
            data, keyring, TimeFloor(), active_counter=None, platform=options.platform
        )
        if checked.files != manifest.files or checked.header != manifest.header:
            raise BundleRefused("changed", "the bundle changed while it was installed")
        return checked

    sinks = _Sinks(slot_dir)
    try:
        walk_bundle(bundle, same_manifest, sinks)  # pass 2: written and checked again
    finally:
        sinks.close()
    assert first is not None
    (slot_dir / "bundle-manifest.json").write_bytes(first)
    _make_venv(slot_dir, manifest, options.python)
    shutil.rmtree(slot_dir / "wheels")
    os.sync()  # every file of the slot on disk before it is marked complete
    replace_durably(slot_dir / ".complete", manifest.version.encode())
    return slot


def _make_venv(slot_dir: Path, manifest: BundleManifest, python: Path) -> None:
    venv = slot_dir / "venv"
    wheels = slot_dir / "wheels"
    pip_wheels = sorted(wheels.glob("pip-*.whl"))
    if not pip_wheels:
        raise InstallError("the bundle has no pip wheel to fill the venv with")
    steps = [
        [str(python), "-m", "venv", "--without-pip", str(venv)],
        [
            str(venv / "bin" / "python"), "-I", f"{pip_wheels[-1]}/pip", "install", "--quiet",
            "--isolated", "--no-index", "--find-links", str(wheels), "--only-binary=:all:",
            "--no-cache-dir", "--disable-pip-version-check", manifest.requirement,
        ],
    ]  # fmt: skip
    # the caller's PYTHONPATH or pip settings must not decide what goes in (a checkout on
    # PYTHONPATH made pip skip yardlink as "already installed"): -I, --isolated, clean env
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-5:])
            raise InstallError(f"filling the slot's venv failed ({step[2]}): {tail}")
    if not (venv / "bin" / "yardlink").is_file():
        raise InstallError(f"the slot's venv has no yardlink command after pip ({venv})")


def _install_config(
    layout: Layout, slot: str, identity: DeviceIdentity, options: InstallOptions
) -> None:
    slot_dir = layout.slot(slot)
    if options.site_config is not None:
        base = options.site_config.read_bytes()
    elif layout.site_config.is_file():
        base = layout.site_config.read_bytes()
    else:
        base = (slot_dir / "config" / "site.toml").read_bytes()
    rendered = render_site_config(
        base,
        identity,
        data_dir=layout.data_dir,
        models_dir=layout.current / "models",
        token_file=layout.token_file,
    )
    user = _service_user(layout)
    write_site_config(
        layout.site_config,
        rendered,
        token_file=layout.token_file,
        token=identity.token,
        owner=None if user is None else (user.pw_uid, user.pw_gid),
    )
    bundled_keys = Envelope.parse((slot_dir / "keys" / "keyring.json").read_bytes())
    trusted = _trusted_keyring(layout, options)
    if not layout.keyring_file.is_file():
        source = options.trust.read_bytes() if options.trust else bundled_keys.to_bytes()
        replace_durably(layout.keyring_file, source)
    elif Keyring.from_document(bundled_keys.signed).version > trusted.version:
        try:
            trusted.rotated(bundled_keys)
        except VerificationError as exc:
            detail = f"the bundle's keyring is not a valid rotation: {exc}"
            raise BundleRefused("keyring", detail) from exc
        replace_durably(layout.keyring_file, bundled_keys.to_bytes())
    if not layout.data_dir.exists():
        layout.data_dir.mkdir(parents=True, mode=0o700)
        fsync_directory(layout.data_dir.parent)


def _service_user(layout: Layout) -> pwd.struct_passwd | None:
    """On a gateway (root ``/``, run as root) the service's user, who alone may read
    ``site.toml``; None elsewhere (tests, a directory: files stay the caller's)."""
    if layout.root != Path("/") or os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise InstallError(
            f"no user {SERVICE_USER!r} on this gateway: create it first"
            f" (adduser --system --group --home /var/lib/yardlink {SERVICE_USER})"
        ) from None
