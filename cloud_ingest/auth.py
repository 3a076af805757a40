"""Bearer-token authentication: every request but ``/healthz`` names its principal.

The middleware hashes the presented token, asks the catalog for a live
credential with that hash (revocation takes effect on the next request: there
is no cache), and stores the :class:`~cloud_ingest.principal.Principal` at
``request[PRINCIPAL]`` (a ``web.RequestKey`` named "yardlink.principal").
Authorization (device A may not touch device B) is checked by the handlers
with the helpers of :mod:`cloud_ingest.principal`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from cloud_ingest.app_keys import CATALOG, METRICS
from cloud_ingest.credentials import MAX_TOKEN_CHARS, hash_token
from cloud_ingest.errors import Unauthorized
from cloud_ingest.principal import PRINCIPAL, Principal

__all__ = ["OPEN_PATHS", "auth_middleware", "bearer_token"]

OPEN_PATHS = frozenset({"/healthz"})
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="yardlink"'}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; Unauthorized otherwise."""
    if not header:
        raise Unauthorized("missing Authorization: Bearer <token> header", headers=_CHALLENGE)
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Authorization must be 'Bearer <token>'", headers=_CHALLENGE)
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise Unauthorized("invalid bearer token", headers=_CHALLENGE)
    return token


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in OPEN_PATHS:
        return await handler(request)
    try:
        principal = await _authenticate(request)
    except Unauthorized:
        request.app[METRICS].auth_failures.inc()
        raise
    request[PRINCIPAL] = principal
    return await handler(request)


async def _authenticate(request: web.Request) -> Principal:
    token = bearer_token(request.headers.get(hdrs.AUTHORIZATION))
    principal = await request.app[CATALOG].principal_for_token(hash_token(token))
    if principal is None:
        raise Unauthorized("unknown or revoked token", headers=_CHALLENGE)
    return principal
