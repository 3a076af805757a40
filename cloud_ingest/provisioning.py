"""Issuing and revoking credentials (shared by the CLI and the admin API).

Each change and its audit event are one catalog transaction.
"""

from __future__ import annotations

from cloud_ingest.api_models import DeviceCreated, DeviceList, DeviceView, OperatorCreated
from cloud_ingest.catalog import Catalog
from cloud_ingest.credentials import hash_token, new_token
from cloud_ingest.errors import BadRequest, NotFound
from sync.protocol import DEVICE_ID_RE

__all__ = [
    "add_device",
    "add_operator",
    "list_devices",
    "revoke_device",
    "revoke_operator",
    "rotate_device",
]


def _check_name(kind: str, value: str) -> None:
    if not DEVICE_ID_RE.fullmatch(value):  # match() would let a trailing newline through
        raise BadRequest(
            f"invalid {kind} {value[:80]!r}: use 1-64 letters, digits or '-', "
            "starting with a letter or digit"
        )


async def add_device(
    catalog: Catalog, device_id: str, site_id: str, *, actor: str, now: float
) -> DeviceCreated:
    """Register a device and return its token (shown once; only its hash is kept)."""
    _check_name("device id", device_id)
    _check_name("site id", site_id)
    token = new_token("device")
    await catalog.add_device(device_id, site_id, hash_token(token), now, actor=actor)
    return DeviceCreated(device_id=device_id, site_id=site_id, token=token)


async def revoke_device(catalog: Catalog, device_id: str, *, actor: str, now: float) -> None:
    """Revoke a device: its tokens stop working on the very next request."""
    await catalog.revoke_device(device_id, now, actor=actor)


async def add_operator(catalog: Catalog, name: str, *, actor: str, now: float) -> OperatorCreated:
    _check_name("operator name", name)
    token = new_token("operator")
    await catalog.add_operator(name, hash_token(token), now, actor=actor)
    return OperatorCreated(name=name, token=token)


async def revoke_operator(catalog: Catalog, name: str, *, actor: str, now: float) -> None:
    """Revoke an operator: its tokens stop working on the very next request."""
    await catalog.revoke_operator(name, now, actor=actor)


async def rotate_device(
    catalog: Catalog, device_id: str, *, actor: str, now: float
) -> DeviceCreated:
    """A new token for a device (shown once); its old tokens are refused from now on."""
    device = await catalog.get_device(device_id)
    if device is None:
        raise NotFound(f"no device {device_id!r}")
    token = new_token("device")
    await catalog.rotate_device_token(device_id, hash_token(token), now, actor=actor)
    return DeviceCreated(device_id=device_id, site_id=device.site_id, token=token)


async def list_devices(catalog: Catalog, *, actor: str, now: float) -> DeviceList:
    """Every device with its watermarks and last handshake; the read is audited."""
    views = [
        DeviceView.of(device, await catalog.watermarks(device.device_id))
        for device in await catalog.list_devices()
    ]
    await catalog.record_audit(now, actor, "device.list", "*", {"devices": len(views)})
    return DeviceList(devices=views)
