"""First boot of a flashed disk: take this gateway's identity from the boot partition.

The disk image is the same for every gateway of a site; the field engineer drops
``yardlink-identity.json`` (``{"device_id", "token"}``, the JSON of
``yardlink ingest device add --json``) on the boot partition before the first
boot.  ``yardlink-firstboot.service`` runs this before ``yardlink.service``: the
identity goes into ``site.toml`` and the token into its ``token_file`` (both 0600,
the service user's) and the file is
renamed ``.applied`` so that it is not read again.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
from pathlib import Path

from image_build.errors import InstallError
from image_build.layout import Layout
from image_build.site_config import DeviceIdentity, render_site_config, write_site_config

__all__ = ["apply_identity_file"]


def apply_identity_file(root: Path, identity_file: Path, *, service_user: str = "yardlink") -> bool:
    """Write the identity into ``site.toml``; False when there is no file to apply."""
    if not identity_file.is_file():
        return False
    try:
        document = json.loads(identity_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InstallError(f"{identity_file} is not readable JSON: {exc}") from exc
    device_id, token = document.get("device_id"), document.get("token")
    if not isinstance(device_id, str) or not device_id:
        raise InstallError(f"{identity_file} names no device_id")
    if token is not None and not isinstance(token, str):
        raise InstallError(f"{identity_file}: token must be a string")
    layout = Layout(root)
    rendered = render_site_config(
        layout.site_config.read_bytes(),
        DeviceIdentity(device_id, token),
        data_dir=layout.data_dir,
        models_dir=layout.current / "models",
        token_file=layout.token_file,
    )
    owner = None
    if os.geteuid() == 0:
        with contextlib.suppress(KeyError):
            user = pwd.getpwnam(service_user)
            owner = (user.pw_uid, user.pw_gid)
    write_site_config(
        layout.site_config, rendered, token_file=layout.token_file, token=token, owner=owner
    )
    identity_file.rename(identity_file.with_name(identity_file.name + ".applied"))
    return True
