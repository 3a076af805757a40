"""The OpenAPI 3.1 document of the ingest service, built from the pydantic models.

Request and response bodies come from the same models the handlers use
(``sync.protocol`` for devices, ``cloud_ingest.api_models`` for operators), so
the document cannot drift from the code on body shapes.  docs/PROTOCOL.md is
the prose companion.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from cloud_ingest import api_models as admin
from sync import protocol as wire

__all__ = ["openapi_document"]

_MODELS: tuple[type[BaseModel], ...] = (
    wire.ErrorBody,
    wire.SyncRequest,
    wire.SyncResponse,
    wire.BatchAck,
    wire.UploadMetadata,
    admin.RawRequestCreate,
    admin.RawRequestView,
    admin.RawRequestList,
    admin.DeviceCreate,
    admin.DeviceCreated,
    admin.DeviceView,
    admin.DeviceList,
    admin.OperatorRevoked,
    admin.AuditList,
)

_ERRORS = {
    "400": "malformed input (the detail says what)",
    "401": "missing, unknown or revoked bearer token",
    "403": "the token may not do this (another device's data, or not an operator)",
}


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


_UPLOAD_SHA256_MISMATCH = (
    "410",
    "upload_sha256_mismatch: the finished upload does not match its Upload-Metadata "
    "sha256 and was deleted; start a new upload",
)


def _errors(*extra: tuple[str, str]) -> dict[str, Any]:
    codes = dict(_ERRORS) | dict(extra)
    return {code: _json(wire.ErrorBody, text) for code, text in codes.items()}


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    security: bool = True,
    tag: str,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    if params:
        op["parameters"] = params
    if not security:
        op["security"] = []
    return op


def _path_param(name: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, type_: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": type_},
        "description": description,
    }


def json_of(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(model)}}


def _paths() -> dict[str, Any]:
    parquet = {wire.BATCH_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}
    return {
        "/healthz": {
            "get": _op("liveness", {"200": {"description": "up"}}, security=False, tag="service")
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics (operator)",
                {"200": {"description": "text exposition format"}} | _errors(),
                tag="service",
            )
        },
        "/v1/openapi.json": {
            "get": _op("this document", {"200": {"description": "OpenAPI"}}, tag="service")
        },
        "/v1/sync": {
            "post": _op(
                "handshake: watermarks in, acked watermarks and raw requests out",
                {"200": _json(wire.SyncResponse, "what the cloud holds and wants")}
                | _errors(("413", "body too large"), ("415", "not JSON")),
                body=json_of(wire.SyncRequest),
                tag="device",
            )
        },
        "/v1/batches/{batch_id}": {
            "put": _op(
                "store one metadata micro-batch (Parquet + zstd), idempotently",
                {
                    "201": _json(wire.BatchAck, "stored"),
                    "200": _json(wire.BatchAck, "already held with the same digest (duplicate)"),
                }
                | _errors(
                    ("409", "already held with another digest"),
                    ("413", "body too large"),
                    ("415", "not Parquet"),
                ),
                body=parquet,
                params=[_path_param("batch_id", wire.BATCH_ID_RE.pattern)],
                tag="device",
            )
        },
        "/v1/raw-requests": {
            "post": _op(
                "ask a device for raw frames (operator)",
                {"201": _json(admin.RawRequestView, "created")}
                | _errors(("404", "no such device"), ("409", "device revoked")),
                body=json_of(admin.RawRequestCreate),
                tag="operator",
            ),
            "get": _op(
                "list raw requests (operator)",
                {"200": _json(admin.RawRequestList, "raw requests")} | _errors(),
                params=[
                    _query("device_id", "string", "only this device"),
                    _query("state", "string", "requested|delivered|expired|unavailable"),
                    _query("limit", "integer", "1..10000, default 1000"),
                ],
                tag="operator",
            ),
        },
        "/v1/raw-requests/{request_id}": {
            "get": _op(
                "one raw request (operator)",
                {"200": _json(admin.RawRequestView, "the request")} | _errors(("404", "unknown")),
                params=[_path_param("request_id")],
                tag="operator",
            )
        },
        "/v1/admin/devices": {
            "get": _op(
                "list devices (operator)",
                {"200": _json(admin.DeviceList, "devices")} | _errors(),
                tag="operator",
            ),
            "post": _op(
                "register a device; the token is shown once (operator)",
                {"201": _json(admin.DeviceCreated, "created")} | _errors(("409", "exists")),
                body=json_of(admin.DeviceCreate),
                tag="operator",
            ),
        },
        "/v1/admin/devices/{device_id}/revoke": {
            "post": _op(
                "revoke a device's tokens (operator)",
                {"200": _json(admin.DeviceView, "revoked")} | _errors(("404", "unknown")),
                params=[_path_param("device_id")],
                tag="operator",
            )
        },
        "/v1/admin/devices/{device_id}/rotate": {
            "post": _op(
                "a new token for a device, shown once; the old one is refused at once (operator)",
                {"200": _json(admin.DeviceCreated, "rotated")}
                | _errors(("404", "unknown"), ("409", "the device is revoked")),
                params=[_path_param("device_id")],
                tag="operator",
            )
        },
        "/v1/admin/operators/{name}/revoke": {
            "post": _op(
                "revoke an operator's tokens (operator)",
                {"200": _json(admin.OperatorRevoked, "revoked")} | _errors(("404", "unknown")),
                params=[_path_param("name")],
                tag="operator",
            )
        },
        "/v1/admin/audit": {
            "get": _op(
                "audit log (operator)",
                {"200": _json(admin.AuditList, "events")} | _errors(),
                params=[
                    _query("after", "integer", "event id to read after"),
                    _query("limit", "integer", "1..10000, default 500"),
                ],
                tag="operator",
            )
        },
        **_model_release_paths(),
        "/v1/blobs/{sha256}": {
            "head": _op(
                "is this blob held? 200 yes, 404 no",
                {"200": {"description": "held"}, "404": {"description": "not held"}},
                params=[_path_param("sha256", wire.SHA256_RE.pattern)],
                tag="device",
            )
        },
        "/v1/uploads": {
            "options": _op(
                "tus discovery (Tus-Version, Tus-Extension, Tus-Max-Size)",
                {"204": {"description": "capabilities"}},
                tag="tus",
            ),
            "post": _op(
                "tus creation (+creation-with-upload); Upload-Metadata per UploadMetadata",
                {"201": {"description": "created; Location names the upload"}}
                | _errors(
                    ("413", "over Tus-Max-Size"),
                    ("460", "the body does not match its Upload-Checksum"),
                    _UPLOAD_SHA256_MISMATCH,
                ),
                tag="tus",
            ),
        },
        "/v1/uploads/{upload_id}": {
            "options": _op(
                "tus discovery",
                {"204": {"description": "capabilities"}},
                tag="tus",
                params=[_path_param("upload_id")],
            ),
            "head": _op(
                "tus offset",
                {"200": {"description": "Upload-Offset"}},
                tag="tus",
                params=[_path_param("upload_id")],
            ),
            "patch": _op(
                "tus append (application/offset+octet-stream)",
                {"204": {"description": "appended"}}
                | _errors(
                    ("409", "offset mismatch"),
                    ("415", "wrong content type"),
                    ("460", "the chunk does not match its Upload-Checksum: resend it"),
                    _UPLOAD_SHA256_MISMATCH,
                ),
                params=[_path_param("upload_id")],
                tag="tus",
            ),
            "delete": _op(
                "tus termination",
                {"204": {"description": "removed"}},
                tag="tus",
                params=[_path_param("upload_id")],
            ),
        },
    }


def _model_release_paths() -> dict[str, Any]:
    """Model releases and rollouts (cloud_ingest/models/routes.py, docs/OTA.md)."""
    release = [_path_param("name"), _path_param("version")]
    binary = {"schema": {"type": "string", "format": "binary"}}
    rollout_view = {"application/json": {"schema": {"type": "object"}}}
    command = {
        "type": "object",
        "properties": {
            "action": {"enum": ["start", "pause", "resume", "abort"]},
            "reason": {"type": "string", "maxLength": 500},
        },
        "required": ["action"],
        "additionalProperties": False,
    }
    return {
        "/v1/models/{name}/{version}/manifest": {
            "get": _op(
                "the signed release manifest, byte for byte as published",
                {"200": {"description": "envelope", "content": rollout_view}}
                | _errors(("404", "no such release")),
                params=release,
                tag="device",
            )
        },
        "/v1/models/{name}/{version}/artifact": {
            "get": _op(
                "the release tar; Range: bytes=N- answers 206 with Content-Range",
                {
                    "200": {"description": "whole", "content": {"application/x-tar": binary}},
                    "206": {"description": "from N", "content": {"application/x-tar": binary}},
                    "416": {"description": "range starts at or past the end"},
                }
                | _errors(("404", "no such release")),
                params=release,
                tag="device",
            )
        },
        "/v1/admin/models": {
            "post": _op(
                "publish a signed release: multipart parts manifest then artifact (operator)",
                {
                    "201": {"description": "published", "content": rollout_view},
                    "200": {"description": "this manifest was published", "content": rollout_view},
                }
                | _errors(
                    ("409", "counter_not_above or conflict"),
                    ("413", "artifact longer than signed, or manifest over 1 MiB"),
                    ("422", "release_refused: the detail names the failed check"),
                ),
                body={
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "manifest": binary["schema"],
                                "artifact": binary["schema"],
                            },
                            "required": ["manifest", "artifact"],
                        }
                    }
                },
                tag="operator",
            ),
            "get": _op(
                "releases and rollouts (operator)",
                {"200": {"description": "releases, rollouts", "content": rollout_view}} | _errors(),
                tag="operator",
            ),
        },
        "/v1/admin/models/{name}/{version}/rollout": {
            "post": _op(
                "start, pause, resume or abort a rollout (operator)",
                {"200": {"description": "the rollout", "content": rollout_view}}
                | _errors(("404", "no such release or rollout"), ("409", "not in this state")),
                body={"application/json": {"schema": command}},
                params=release,
                tag="operator",
            ),
            "get": _op(
                "a rollout's state and tally (operator)",
                {"200": {"description": "the rollout", "content": rollout_view}}
                | _errors(("404", "no such rollout")),
                params=release,
                tag="operator",
            ),
        },
    }


def _with_aliases(paths: dict[str, Any]) -> dict[str, Any]:
    # tus clients use the collection URL with or without the trailing slash
    return paths | {"/v1/uploads/": paths["/v1/uploads"]}


@cache
def openapi_document() -> dict[str, Any]:
    """The whole API as an OpenAPI 3.1 dict (built once)."""
    _, schemas = models_json_schema(
        [(m, "validation") for m in _MODELS], ref_template="#/components/schemas/{model}"
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "yardlink cloud ingest",
            "version": str(wire.PROTOCOL_VERSION),
            "description": "Edge-to-cloud sync protocol v1; see docs/PROTOCOL.md.",
        },
        "paths": _with_aliases(_paths()),
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
