"""Who is calling: the authenticated principal attached to each request.

The auth middleware (cloud_ingest/auth.py) sets ``request[PRINCIPAL]``; handlers
read it through :func:`principal_of` and check ownership with the helpers here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from cloud_ingest.errors import Forbidden, Unauthorized

__all__ = ["PRINCIPAL", "Principal", "principal_of", "require_device", "require_operator"]


@dataclass(frozen=True, slots=True)
class Principal:
    role: Literal["device", "operator"]
    name: str  # device id for devices, operator name for operators
    device_id: str | None = None
    site_id: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"

    def may_access_device(self, device_id: str) -> bool:
        """Operators see every device; a device only itself."""
        return self.is_operator or self.device_id == device_id


# A typed request key (aiohttp >= 3.12 warns on plain string keys); its name
# is still "yardlink.principal".
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("yardlink.principal", Principal)


def principal_of(request: web.Request) -> Principal:
    principal = request.get(PRINCIPAL)
    if not isinstance(principal, Principal):
        raise Unauthorized("missing or invalid bearer token")
    return principal


def require_device(request: web.Request) -> Principal:
    principal = principal_of(request)
    if principal.role != "device" or principal.device_id is None:
        raise Forbidden("this endpoint is for device credentials")
    return principal


def require_operator(request: web.Request) -> Principal:
    principal = principal_of(request)
    if not principal.is_operator:
        raise Forbidden("this endpoint is for operator credentials")
    return principal
