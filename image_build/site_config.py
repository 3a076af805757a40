"""The gateway's ``site.toml``: the site's settings with this gateway's identity injected.

One bundle serves every gateway of a site; what differs (``device_id`` and the
cloud token) is set at install, together with absolute paths for the data dir
(outside the slots) and the models (in the current slot).  The token is not
written into ``site.toml``: it goes to a file of its own (``/etc/yardlink/device-token``,
0600) named by ``[sync] token_file``, so the site config can be shown or copied
without it.  The result is validated with the appliance's own schema before
anything is switched.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appliance.config import parse_config
from appliance.errors import ApplianceError
from image_build.errors import InstallError
from sync.shared.durable_file import replace_durably

__all__ = [
    "DeviceIdentity",
    "current_identity",
    "dump_toml",
    "read_credentials",
    "render_site_config",
    "write_site_config",
]


class DeviceIdentity:
    """Who this gateway is: its device id and, when it syncs, its cloud token."""

    def __init__(self, device_id: str, token: str | None) -> None:
        self.device_id = device_id
        self.token = token


def read_credentials(path: Path, device_id: str) -> DeviceIdentity:
    """``yardlink ingest device add --json`` output, or a file holding just the token."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InstallError(f"cannot read credentials {path}: {exc}") from exc
    token: object = text
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise InstallError(f"credentials {path} is not valid JSON: {exc}") from exc
        named = document.get("device_id", device_id)
        if named != device_id:
            raise InstallError(f"credentials {path} are for device {named!r}, not {device_id!r}")
        token = document.get("token")
    if not isinstance(token, str) or not token or any(c.isspace() for c in token):
        raise InstallError(f"credentials {path} hold no usable token")
    return DeviceIdentity(device_id, token)


def render_site_config(
    base: bytes, identity: DeviceIdentity, *, data_dir: Path, models_dir: Path, token_file: Path
) -> bytes:
    """``base`` with this gateway's identity and paths; a token becomes ``[sync]
    token_file = token_file`` (the caller writes the file).  Checked with the token
    in place, so nothing need be on disk yet."""
    try:
        data = tomllib.loads(base.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InstallError(f"the site config is not valid TOML: {exc}") from exc
    data.setdefault("site", {})["device_id"] = identity.device_id
    data["site"]["data_dir"] = str(data_dir)
    data.setdefault("outbox", {})["path"] = str(data_dir / "outbox")
    data["models_dir"] = str(models_dir)
    checked = data
    if identity.token is not None:
        sync = data.setdefault("sync", {})
        sync.pop("token", None)
        sync["token_file"] = str(token_file)
        inline = {k: v for k, v in sync.items() if k != "token_file"} | {"token": identity.token}
        checked = data | {"sync": inline}
    try:
        parse_config(checked, source="site config", environ={})
    except ApplianceError as exc:
        raise InstallError(f"the site config would not start the appliance: {exc}") from exc
    return dump_toml(data).encode("utf-8")


def write_site_config(
    site_config: Path,
    rendered: bytes,
    *,
    token_file: Path,
    token: str | None,
    owner: tuple[int, int] | None,
) -> None:
    """Write the token file (first: the config that names it may already be there),
    then ``site.toml``; each 0600, durably, only when it changes, given to ``owner``
    (uid, gid: the service's user, when installing as root on a gateway)."""
    for path, data in ((token_file, token), (site_config, rendered)):
        if data is None:
            continue
        content = data.encode("utf-8") + b"\n" if isinstance(data, str) else data
        if not path.is_file() or path.read_bytes() != content:
            replace_durably(path, content)  # mkstemp's 0600
        if owner is not None:
            os.chown(path, *owner)


def current_identity(site_toml: Path) -> DeviceIdentity | None:
    """The identity an installed ``site.toml`` holds (its token inline, as older
    installs wrote it, or in its ``token_file``)."""
    try:
        data = tomllib.loads(site_toml.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    device_id = data.get("site", {}).get("device_id")
    sync = data.get("sync", {})
    token = sync.get("token")
    token_file = sync.get("token_file")
    if token is None and isinstance(token_file, str):
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip() or None
        except OSError:
            token = None
    if not isinstance(device_id, str):
        return None
    return DeviceIdentity(device_id, token if isinstance(token, str) else None)


def dump_toml(data: Mapping[str, Any]) -> str:
    """TOML for the shapes a site config has: tables, arrays of tables, scalars, lists."""
    lines: list[str] = []
    _table(lines, (), data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(lines: list[str], path: tuple[str, ...], table: Mapping[str, Any]) -> None:
    scalars = {k: v for k, v in table.items() if not _is_table(v) and not _is_table_array(v)}
    for key, value in scalars.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in table.items():
        if _is_table(value):
            lines += ["", f"[{'.'.join(_key(p) for p in (*path, key))}]"]
            _table(lines, (*path, key), value)
        elif _is_table_array(value):
            for item in value:
                lines += ["", f"[[{'.'.join(_key(p) for p in (*path, key))}]]"]
                _table(lines, (*path, key), item)


def _is_table(value: Any) -> bool:
    return isinstance(value, dict)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise InstallError(f"cannot write {type(value).__name__} into a site config")
