"""Where an install puts things under ROOT, and the A/B state kept beside the slots.

    ROOT/opt/yardlink/slots/{a,b}/   venv/, models/, bundle-manifest.json, .complete
    ROOT/opt/yardlink/current        symlink -> slots/a or slots/b (switched by rename)
    ROOT/opt/yardlink/image-state.json   active slot, release counter, signed-time floor,
                                          and a trial in progress
    ROOT/etc/yardlink/site.toml      the site config with this gateway's identity (0600)
    ROOT/etc/yardlink/device-token   the device's cloud token, ``[sync] token_file`` (0600)
    ROOT/etc/yardlink/release-keyring.json   the release keys this gateway trusts
    ROOT/etc/systemd/system/yardlink@.service    the unit, one instance per slot
    ROOT/etc/systemd/system-generators/yardlink-slot   boot starts yardlink@<current>, or
                                          the trial's previous slot while one is open
    ROOT/run/yardlink-switch/<slot>.env           --standby for a slot's next start
    ROOT/var/lib/yardlink/           the data dir: outbox, blobs, keys (never touched)

Paths inside the rendered files are absolute under ROOT, so ROOT must be the path
the system runs from (``/`` on a gateway; inside the chroot for a disk image).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from image_build.errors import InstallError
from sync.shared.durable_file import fsync_directory, replace_durably
from sync.shared.signing import TimeFloor, VerificationError

__all__ = ["SLOTS", "ImageState", "Layout"]

SLOTS = ("a", "b")


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def prefix(self) -> str:
        """What the rendered files put before ``/opt``, ``/etc``...: empty for ``/``."""
        return "" if self.root == Path("/") else str(self.root)

    @property
    def base(self) -> Path:
        return self.root / "opt" / "yardlink"

    def slot(self, name: str) -> Path:
        return self.base / "slots" / name

    @property
    def current(self) -> Path:
        return self.base / "current"

    @property
    def state_file(self) -> Path:
        return self.base / "image-state.json"

    @property
    def etc(self) -> Path:
        return self.root / "etc" / "yardlink"

    @property
    def site_config(self) -> Path:
        return self.etc / "site.toml"

    @property
    def token_file(self) -> Path:
        """The device's cloud token (0600, the service user's), named by ``site.toml``."""
        return self.etc / "device-token"

    @property
    def keyring_file(self) -> Path:
        return self.etc / "release-keyring.json"

    @property
    def unit_file(self) -> Path:
        """The template unit: ``yardlink@a.service`` and ``yardlink@b.service``."""
        return self.root / "etc" / "systemd" / "system" / "yardlink@.service"

    @property
    def legacy_unit_file(self) -> Path:
        """The single unit of releases before the per-slot template (removed)."""
        return self.root / "etc" / "systemd" / "system" / "yardlink.service"

    @property
    def generator_file(self) -> Path:
        return self.root / "etc" / "systemd" / "system-generators" / "yardlink-slot"

    def start_mode_file(self, slot: str) -> Path:
        """The unit's ``EnvironmentFile=`` for ``slot``: ``--standby`` during a switch."""
        return self.root / "run" / "yardlink-switch" / f"{slot}.env"

    @staticmethod
    def other(slot: str) -> str:
        return "b" if slot == "a" else "a"

    @property
    def data_dir(self) -> Path:
        return self.root / "var" / "lib" / "yardlink"

    def current_slot(self) -> str | None:
        """The slot ``current`` points at, if it points at a complete one."""
        try:
            target = os.readlink(self.current)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise InstallError(f"{self.current} is not a slot link: {exc}") from exc
        name = Path(target).name
        return name if name in SLOTS else None

    def complete(self, slot: str) -> bool:
        return (self.slot(slot) / ".complete").is_file()

    def switch_to(self, slot: str) -> None:
        """Point ``current`` at ``slot`` atomically (a new link renamed over the old)."""
        temp = self.base / ".current.new"
        temp.unlink(missing_ok=True)
        os.symlink(Path("slots") / slot, temp)
        os.replace(temp, self.current)
        fsync_directory(self.base)


@dataclass(frozen=True)
class ImageState:
    """What the installer remembers between runs (crash-safe JSON)."""

    active: str | None = None
    counter: int | None = None  # release counter of the active slot (rollback protection)
    version: str | None = None
    floor: TimeFloor = TimeFloor()
    trial: dict[str, str] | None = None  # {"slot", "previous"} while a switch is unconfirmed

    @classmethod
    def load(cls, path: Path) -> ImageState:
        try:
            raw: dict[str, Any] = json.loads(path.read_bytes())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise InstallError(f"cannot read {path}: {exc}") from exc
        try:
            floor = TimeFloor.from_json(raw.get("floor", {}))
        except VerificationError as exc:
            raise InstallError(f"{path}: {exc}") from exc
        return cls(
            active=raw.get("active"),
            counter=raw.get("counter"),
            version=raw.get("version"),
            floor=floor,
            trial=raw.get("trial"),
        )

    def save(self, path: Path) -> None:
        # the boot generator (data/yardlink-slot-generator) reads the trial's "previous"
        # from this exact layout (sorted keys, indent 2): change both together
        document = {
            "active": self.active,
            "counter": self.counter,
            "version": self.version,
            "floor": self.floor.to_json(),
            "trial": self.trial,
        }
        replace_durably(path, json.dumps(document, sort_keys=True, indent=2).encode())
