"""HTTP routes of the model registry and its rollouts (docs/PROTOCOL.md).

Devices (any authenticated principal):

``GET  /v1/models/{name}/{version}/manifest``   the signed envelope exactly as published
``GET  /v1/models/{name}/{version}/artifact``   the tar; ``Range: bytes=N-`` answers 206 with
                                                ``Content-Range``, 416 past the end

Operators:

``POST /v1/admin/models``                               publish: multipart, parts ``manifest``
                                                        then ``artifact``; 201 (200 if held)
``GET  /v1/admin/models``                               releases and rollouts
``POST /v1/admin/models/{name}/{version}/rollout``      ``{"action": "start|pause|resume|abort",
                                                        "reason": "..."}``
``GET  /v1/admin/models/{name}/{version}/rollout``      the rollout's state and tally
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ConfigDict, Field

from cloud_ingest.app_keys import CATALOG, CLOCK, METRICS, SETTINGS
from cloud_ingest.errors import BadRequest, NotFound
from cloud_ingest.json_bodies import read_model
from cloud_ingest.models.artifact_response import artifact_response
from cloud_ingest.models.registry import (
    ModelRegistry,
    ReleaseRefused,
    artifact_key,
    load_keyring,
)
from cloud_ingest.models.rollouts import RolloutService
from cloud_ingest.models.store import ReleaseRecord, open_release_store
from cloud_ingest.principal import principal_of, require_operator
from cloud_ingest.storage import STORAGE
from sync.shared.signing import MAX_ENVELOPE_BYTES

__all__ = ["MODELS", "ModelsRoom", "add_model_routes"]


class ModelsRoom:
    """What the model routes and the handshake share: registry and rollouts."""

    def __init__(self, registry: ModelRegistry, rollouts: RolloutService) -> None:
        self.registry = registry
        self.rollouts = rollouts


# what aiohttp's multipart reader raises on a broken body (bad boundary, bad part headers)
_BROKEN_MULTIPART = (ValueError, AssertionError, HttpProcessingError)

MODELS: web.AppKey[ModelsRoom] = web.AppKey("yardlink.models", ModelsRoom)


class RolloutCommand(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["start", "pause", "resume", "abort"]
    reason: str = Field(default="", max_length=500)


def add_model_routes(app: web.Application) -> None:
    """Mount the routes; call after the catalog's cleanup context is added (it opens first)."""
    app.cleanup_ctx.append(_models_context)
    app.router.add_get("/v1/models/{name}/{version}/manifest", get_manifest)
    app.router.add_get("/v1/models/{name}/{version}/artifact", get_artifact)
    app.router.add_post("/v1/admin/models", publish)
    app.router.add_get("/v1/admin/models", list_models)
    app.router.add_post("/v1/admin/models/{name}/{version}/rollout", rollout_command)
    app.router.add_get("/v1/admin/models/{name}/{version}/rollout", rollout_status)


async def _models_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    keyring = load_keyring(settings.release_keyring_file) if settings.release_keyring_file else None
    store = await open_release_store(settings, app[CATALOG])
    spool = settings.data_dir / "models" / "incoming"
    registry = ModelRegistry(app[STORAGE].store, spool, store, keyring)
    app[MODELS] = ModelsRoom(registry, RolloutService(store, app[CATALOG], app[METRICS].registry))
    try:
        yield
    finally:
        await store.close()


async def _release(request: web.Request) -> ReleaseRecord:
    principal_of(request)
    name, version = request.match_info["name"], request.match_info["version"]
    release = await request.app[MODELS].registry.store.get_release(name, version)
    if release is None:
        raise NotFound(f"no published release {name} {version}")
    return release


async def get_manifest(request: web.Request) -> web.Response:
    release = await _release(request)
    return web.Response(body=release.manifest, content_type="application/json")


async def get_artifact(request: web.Request) -> web.StreamResponse:
    release = await _release(request)
    objects = request.app[MODELS].registry.objects  # shared by every instance with S3
    return await artifact_response(request, objects, artifact_key(release.sha256), release.size)


async def publish(request: web.Request) -> web.Response:
    operator = require_operator(request)
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("publish is multipart/form-data with parts 'manifest' then 'artifact'")
    try:
        reader = await request.multipart()
        manifest = await _manifest_part(await reader.next())
        artifact_part = await reader.next()
    except _BROKEN_MULTIPART as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from exc
    if not isinstance(artifact_part, BodyPartReader) or artifact_part.name != "artifact":
        raise BadRequest("the second part must be 'artifact'")

    async def artifact_chunks() -> AsyncIterator[bytes]:
        try:
            while chunk := await artifact_part.read_chunk(1 << 20):
                yield chunk
        except _BROKEN_MULTIPART as exc:
            raise BadRequest(f"malformed multipart body: {exc}") from exc

    result = await request.app[MODELS].registry.publish(
        manifest, artifact_chunks(), actor=operator.name, now=request.app[CLOCK]()
    )
    return web.json_response(_release_view(result.release), status=201 if result.created else 200)


async def _manifest_part(part: object) -> bytes:
    if not isinstance(part, BodyPartReader) or part.name != "manifest":
        raise BadRequest("the first part must be 'manifest'")
    manifest = bytearray()
    while chunk := await part.read_chunk():
        manifest += chunk
        if len(manifest) > MAX_ENVELOPE_BYTES:
            raise ReleaseRefused(
                "envelope", f"manifest exceeds {MAX_ENVELOPE_BYTES} bytes", status=413
            )
    return bytes(manifest)


async def list_models(request: web.Request) -> web.Response:
    require_operator(request)
    room = request.app[MODELS]
    releases = await room.registry.store.list_releases()
    statuses = await room.rollouts.statuses(now=request.app[CLOCK]())
    return web.json_response(
        {
            "releases": [_release_view(r) for r in releases],
            "rollouts": [s.to_json() for s in statuses],
        }
    )


async def rollout_command(request: web.Request) -> web.Response:
    operator = require_operator(request)
    body = await read_model(request, RolloutCommand)
    name, version = request.match_info["name"], request.match_info["version"]
    rollouts, now = request.app[MODELS].rollouts, request.app[CLOCK]()
    if body.action == "start":
        status = await rollouts.start(name, version, actor=operator.name, now=now)
    else:
        status = await rollouts.act(
            name, version, body.action, actor=operator.name, now=now, reason=body.reason
        )
    return web.json_response(status.to_json())


async def rollout_status(request: web.Request) -> web.Response:
    require_operator(request)
    name, version = request.match_info["name"], request.match_info["version"]
    status = await request.app[MODELS].rollouts.status(name, version, now=request.app[CLOCK]())
    return web.json_response(status.to_json())


def _release_view(release: ReleaseRecord) -> dict[str, object]:
    return {
        "name": release.name,
        "version": release.version,
        "counter": release.counter,
        "sha256": release.sha256,
        "size": release.size,
        "keyid": release.keyid,
        "published_by": release.published_by,
        "published_at": release.published_at,
    }
