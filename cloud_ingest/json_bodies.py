"""Reading JSON request bodies into pydantic models, with clear 4xx answers."""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from cloud_ingest.app_keys import SETTINGS
from cloud_ingest.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

__all__ = ["describe_validation_error", "read_limited", "read_model"]

ModelT = TypeVar("ModelT", bound=BaseModel)


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming the first few bad fields (no input values echoed at length)."""
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "; ".join(parts) + more


async def read_limited(request: web.Request, limit: int, what: str) -> bytes:
    """The whole body, refusing more than ``limit`` bytes (413) even when chunked."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"{what} of {request.content_length} bytes exceeds {limit}")
    parts: list[bytes] = []
    size = 0
    while chunk := await request.content.read(1 << 20):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"{what} exceeds {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def read_model(request: web.Request, model: type[ModelT]) -> ModelT:
    """Parse the request's JSON body as ``model``; 400/413/415 with the reason otherwise."""
    if request.content_type not in ("application/json", "application/octet-stream"):
        raise UnsupportedMediaType("send the body as application/json")
    body = await read_limited(request, request.app[SETTINGS].max_json_bytes, "JSON body")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise BadRequest(f"invalid {model.__name__}: {describe_validation_error(exc)}") from exc
