"""Parsing query-string parameters with 400s that name the parameter."""

from __future__ import annotations

from aiohttp import web

from cloud_ingest.errors import BadRequest

__all__ = ["int_param"]


def int_param(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"query parameter {name!r} must lie in {low}..{high}")
    return value
