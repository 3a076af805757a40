"""The OpenAPI 3.1 document of the local API, served at ``GET /v1/openapi.json``.

Bodies come from the models the handlers answer with (``ApplianceStatus``,
``SyncProgress``) or from the small models below, so the document follows the
code; a test checks that every mounted route is documented and the generated
requests (schemathesis) check that every answer matches it.  A new route adds
its entry to ``_paths`` here.  The served document lists only the routes this
daemon mounted (the sync routes need ``sync.cloud_url``).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from appliance.api_models import (
    AuditList,
    BandwidthCap,
    ErrorBody,
    FrameAccepted,
    FrameStored,
    Health,
    InstallRequest,
    InstallVerdict,
    RefusedRelease,
    RollbackRequest,
    SyncView,
    TrustedKeyring,
)
from appliance.sources.frame_metadata import MAX_STRING_CHARS
from appliance.status import ApplianceStatus
from sync.protocol import DEVICE_ID_RE

__all__ = [
    "OPENAPI_PATH",
    "add_openapi_routes",
    "documented_operations",
    "mounted_operations",
    "openapi_document",
]

OPENAPI_PATH = "/v1/openapi.json"


_MODELS: tuple[type[BaseModel], ...] = (
    ErrorBody,
    FrameAccepted,
    FrameStored,
    Health,
    ApplianceStatus,
    SyncView,
    BandwidthCap,
    AuditList,
    RefusedRelease,
    InstallRequest,
    RollbackRequest,
    InstallVerdict,
    TrustedKeyring,
)
_REQUEST_MODELS = (BandwidthCap, InstallRequest, RollbackRequest)

_AUTH_ERRORS = {
    "401": "no bearer token (Authorization: Bearer <technician token>)",
    "403": "not the technician token",
}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*extra: tuple[str, str], public: bool = False) -> dict[str, Any]:
    codes = ({} if public else dict(_AUTH_ERRORS)) | dict(extra)
    return {code: _json(ErrorBody, text) for code, text in codes.items()}


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    tag: str,
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    public: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    if params:
        op["parameters"] = params
    if public:
        op["security"] = []
    return op


def _text(description: str, media_type: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


_AUDIT_REFUSED = ("503", "audit_refused: the action's audit record could not be stored")


def _json_get(summary: str, model: type[BaseModel], description: str, tag: str) -> dict[str, Any]:
    """A ``GET`` (technician token) answering one JSON document."""
    return {"get": _op(summary, {"200": _json(model, description)} | _errors(), tag=tag)}


def _sync_action(summary: str) -> dict[str, Any]:
    return {
        "post": _op(
            summary,
            {"200": _json(SyncView, "progress after the action")} | _errors(_AUDIT_REFUSED),
            tag="sync",
        )
    }


def _frames(cameras: tuple[str, ...] | None, metadata_keys: tuple[str, ...] | None) -> Any:
    """``POST /v1/frames``; this daemon's cameras and metadata keys when they are given."""
    image = {"schema": {"type": "string", "format": "binary"}}
    camera: dict[str, Any] = {"type": "string", "pattern": DEVICE_ID_RE.pattern}
    if cameras is not None:
        camera = {"type": "string", "enum": list(cameras)}
    value = {
        "anyOf": [
            {"type": "string", "maxLength": MAX_STRING_CHARS},
            {"type": "number"},
            {"type": "boolean"},
            {"type": "null"},
        ]
    }
    metadata: dict[str, Any] = {"type": "object", "additionalProperties": value}
    if metadata_keys is not None:
        metadata = {
            "type": "object",
            "properties": {key: value for key in metadata_keys},
            "additionalProperties": False,
        }
    return {
        "post": _op(
            "push one frame (JPEG or PNG) for a configured camera",
            {
                "201": _json(FrameStored, "written to the spool and fsync'd (push_mode durable)"),
                "202": _json(FrameAccepted, "queued in memory (push_mode queued)"),
            }
            | _errors(
                ("400", "no camera named, bad X-Frame-Metadata, an empty or corrupt image"),
                ("404", "camera not configured"),
                ("413", "body over [local_api] max_frame_bytes"),
                ("415", "not image/jpeg or image/png, or bytes of another type"),
                ("503", "shutting_down: the appliance is stopping; retry shortly"),
                ("507", "not_stored: the spool could not take the frame; push it again"),
            ),
            body={"image/jpeg": image, "image/png": image},
            params=[
                {
                    "name": "camera",
                    "in": "query",
                    "required": True,
                    "description": "camera id (the X-Camera-Id header may name it instead)",
                    "schema": camera,
                },
                {
                    "name": "X-Frame-Metadata",
                    "in": "header",
                    "required": False,
                    "description": "flat JSON object of [local_api] frame_metadata_keys;"
                    " it rides with the frame's events to the cloud",
                    "content": {"application/json": {"schema": metadata}},
                },
            ],
            tag="frames",
        )
    }


def _paths(
    cameras: tuple[str, ...] | None, metadata_keys: tuple[str, ...] | None
) -> dict[str, dict[str, Any]]:
    return {
        "/healthz": {
            "get": _op(
                "ready to serve? (no token)",
                {
                    "200": _json(Health, "ready"),
                    "503": _json(Health, "not ready; reason says why"),
                },
                tag="service",
                public=True,
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics",
                {"200": _text("text exposition format", "text/plain")} | _errors(),
                tag="service",
            )
        },
        OPENAPI_PATH: {
            "get": _op(
                "this document",
                {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}
                | _errors(),
                tag="service",
            )
        },
        "/v1/frames": _frames(cameras, metadata_keys),
        "/v1/status": _json_get(
            "tasks, models, outbox, disk, spool, sync and readiness",
            ApplianceStatus,
            "the appliance's status",
            tag="technician",
        ),
        "/v1/events": {
            "get": _op(
                "server-sent events, one per durable task result (never ends)",
                {"200": _text("event: result / data: <json>", "text/event-stream")} | _errors(),
                tag="technician",
            )
        },
        "/v1/audit": _json_get(
            "the technician actions of this run, oldest first",
            AuditList,
            "audit records",
            tag="technician",
        ),
        "/v1/support-bundle": {
            "post": _op(
                "a .tar.gz for support (no token, no key)",
                {
                    "200": {
                        "description": "the bundle",
                        "content": {"application/gzip": {"schema": {"format": "binary"}}},
                    }
                }
                | _errors(_AUDIT_REFUSED),
                tag="technician",
            )
        },
        "/v1/sync": _json_get("the sync engine's progress", SyncView, "progress", tag="sync"),
        "/v1/sync/pause": _sync_action("stop sending until resumed"),
        "/v1/sync/resume": _sync_action("send again"),
        "/v1/sync/now": _sync_action("handshake now, skip the backoff"),
        "/v1/sync/bandwidth": {
            "put": _op(
                "set the global upload cap, for a while or until changed",
                {"200": _json(SyncView, "progress with the new cap")}
                | _errors(("400", "not a cap: the detail shows the shape"), _AUDIT_REFUSED),
                body=_json(BandwidthCap, "")["content"],
                tag="sync",
            )
        },
    } | _model_paths()


# A signed document (sync.shared.signing.Envelope): the keyring and its signatures.
_ENVELOPE = {
    "type": "object",
    "properties": {
        "signed": {"type": "object"},
        "signatures": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["signed", "signatures"],
    "additionalProperties": False,
}


def _model_paths() -> dict[str, dict[str, Any]]:
    """Model updates (docs/OTA.md); mounted when ``[updates] keyring_file`` is set."""
    per_task = {"type": "object", "additionalProperties": {"type": "object"}}
    report = {
        "description": "per task: serving slot, slots, shadow window, last verdict",
        "content": {"application/json": {"schema": per_task}},
    }
    task = {"name": "task", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/v1/models": {
            "get": _op("model slots per task", {"200": report} | _errors(), tag="models")
        },
        "/v1/models/keyring": {
            "post": _op(
                "trust a new signed release keyring (yardlink models keyring --base)",
                {
                    "200": _json(TrustedKeyring, "the keyring now trusted"),
                    "422": _json(RefusedRelease, "refused: the check says which"),
                }
                | _errors(),
                body={"application/json": {"schema": _ENVELOPE}},
                tag="models",
            )
        },
        "/v1/models/install": {
            "post": _op(
                "install a release from files on the appliance; answers with the verdict",
                {
                    "200": _json(InstallVerdict, "committed, or rolled back with the reason"),
                    "422": _json(RefusedRelease, "refused before use"),
                }
                | _errors(("400", "not {archive, manifest}, or a file cannot be read")),
                body=_json(InstallRequest, "")["content"],
                tag="models",
            )
        },
        "/v1/models/{task}/rollback": {
            "post": _op(
                "back one release (ends a shadow window)",
                {"200": report}
                | _errors(
                    ("400", "reason is not a string of at most 500 characters"),
                    ("409", "nothing_to_roll_back: the pinned model serves"),
                ),
                params=[task],
                tag="models",
            )
        },
    }


@cache
def _full_document(
    cameras: tuple[str, ...] | None = None, metadata_keys: tuple[str, ...] | None = None
) -> dict[str, Any]:
    _, schemas = models_json_schema(
        [
            (model, "validation" if model in _REQUEST_MODELS else "serialization")
            for model in _MODELS
        ],
        ref_template="#/components/schemas/{model}",
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "yardlink appliance local API",
            "version": "1",
            "description": "Cameras push frames; technicians and the TUI read status and"
            " steer sync. See docs/OPERATIONS.md.",
        },
        "paths": _paths(cameras, metadata_keys),
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"technician": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"technician": []}],
    }


def openapi_document(
    operations: Iterable[tuple[str, str]] | None = None,
    *,
    cameras: Iterable[str] | None = None,
    metadata_keys: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The document; with ``operations`` ((METHOD, path) pairs) only those are listed, with
    ``cameras`` and ``metadata_keys`` the frame parameters name this daemon's."""
    full = _full_document(
        None if cameras is None else tuple(sorted(cameras)),
        None if metadata_keys is None else tuple(metadata_keys),
    )
    if operations is None:
        return full
    wanted: dict[str, set[str]] = {}
    for method, path in operations:
        wanted.setdefault(path, set()).add(method.lower())
    paths = {
        path: {method: op for method, op in ops.items() if method in wanted.get(path, ())}
        for path, ops in full["paths"].items()
    }
    return full | {"paths": {path: ops for path, ops in paths.items() if ops}}


def documented_operations() -> set[tuple[str, str]]:
    """(METHOD, path) of every operation the full document describes."""
    paths: dict[str, dict[str, Any]] = _full_document()["paths"]
    return {(method.upper(), path) for path, ops in paths.items() for method in ops}


def mounted_operations(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path) of every route of ``app`` (HEAD that aiohttp adds to GET left out)."""
    mounted = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path is not None and route.method not in ("HEAD", "*"):
            mounted.add((route.method, str(path)))
    return mounted


def add_openapi_routes(
    app: web.Application, *, cameras: Iterable[str], metadata_keys: Iterable[str]
) -> None:
    """``GET /v1/openapi.json``: this daemon's document (its routes, cameras, metadata keys)."""
    cameras, metadata_keys = tuple(cameras), tuple(metadata_keys)

    async def get_openapi(request: web.Request) -> web.Response:
        operations = mounted_operations(request.app)
        document = openapi_document(operations, cameras=cameras, metadata_keys=metadata_keys)
        return web.json_response(document)

    app.router.add_get(OPENAPI_PATH, get_openapi)
