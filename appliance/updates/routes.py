"""Local API routes of model updates (technician token required, as every route).

* ``GET /v1/models``: per task, the serving slot (or ``pinned``), both slots,
  a shadow window in progress and the last verdict.
* ``POST /v1/models/{task}/rollback`` (JSON ``{"reason": "..."}``, optional):
  back one release (ends a shadow window if one runs); 409 when the pinned
  model serves.
* ``POST /v1/models/keyring`` (body: a signed keyring, ``yardlink models keyring
  --base``): trust it if signed by a key trusted now and one of the new ring, with
  a higher version and every revocation kept; 422 with ``check`` otherwise.
* ``POST /v1/models/install`` (JSON ``{"archive": path, "manifest": path}``, files
  on the appliance, e.g. from a USB stick): verify, stage, validate, switch,
  shadow, commit or roll back; answers once the verdict is in.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance.errors import ApplianceError
from appliance.updates.service import ModelUpdates
from sync.shared.signing import VerificationError

__all__ = ["add_model_routes"]

_MAX_REASON = 500


class BadModelRequest(ApplianceError):
    http_status = 400
    code = "bad_request"


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = json.loads(await request.read())
    except ValueError as exc:
        raise BadModelRequest(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadModelRequest("body must be a JSON object")
    return body


def _encodable(path: str) -> bool:
    try:
        os.fsencode(path)
    except UnicodeEncodeError:  # a lone surrogate from JSON: no file system name
        return False
    return True


def add_model_routes(app: web.Application, updates: ModelUpdates) -> None:
    async def list_models(request: web.Request) -> web.Response:
        return web.json_response(updates.report())

    async def rollback(request: web.Request) -> web.Response:
        body = await _json_body(request)
        reason = body.get("reason", "technician request")
        if not isinstance(reason, str) or len(reason) > _MAX_REASON:
            raise BadModelRequest(f"reason must be a string of at most {_MAX_REASON} characters")
        report = await updates.rollback(request.match_info["task"], reason, actor="technician")
        return web.json_response(report)

    async def install(request: web.Request) -> web.Response:
        body = await _json_body(request)
        archive, manifest = body.get("archive"), body.get("manifest")
        if not isinstance(archive, str) or not isinstance(manifest, str):
            raise BadModelRequest('body is {"archive": path, "manifest": path}')
        for path in (archive, manifest):  # else open() raises ValueError: a 500
            if "\x00" in path or not _encodable(path):
                raise BadModelRequest(f"{path!r} cannot be a file name here")
        try:
            manifest_bytes = await asyncio.to_thread(Path(manifest).read_bytes)
        except OSError as exc:
            raise BadModelRequest(f"cannot read {manifest}: {exc.strerror}") from None
        try:
            verdict = await updates.install(Path(archive), manifest_bytes)
        except VerificationError as exc:
            return web.json_response(
                {"error": "refused", "check": exc.check, "detail": str(exc)}, status=422
            )
        except OSError as exc:
            raise BadModelRequest(f"cannot read {archive}: {exc.strerror}") from None
        return web.json_response(
            {"committed": verdict.commit, "reason": verdict.reason, **verdict.evidence}
        )

    async def rotate_keyring(request: web.Request) -> web.Response:
        try:
            keyring = await updates.agent.rotate_keyring(await request.read(), actor="technician")
        except VerificationError as exc:
            return web.json_response(
                {"error": "refused", "check": exc.check, "detail": str(exc)}, status=422
            )
        return web.json_response(
            {
                "version": keyring.version,
                "keys": sorted(keyring.keys),
                "revoked": sorted(keyring.revoked),
            }
        )

    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/v1/models/keyring", rotate_keyring)
    app.router.add_post("/v1/models/install", install)
    app.router.add_post("/v1/models/{task}/rollback", rollback)
