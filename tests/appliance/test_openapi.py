"""The local API's OpenAPI document: every mounted route is in it, and it is valid."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import schemathesis
from aiohttp import web

from appliance.api import create_app
from appliance.api_server import API_ROUTES
from appliance.daemon import Daemon
from appliance.openapi import (
    OPENAPI_PATH,
    documented_operations,
    mounted_operations,
    openapi_document,
)
from appliance.updates.routes import add_model_routes
from appliance.updates.service import ModelUpdates
from tests.appliance.daemon_harness import site_config

NO_MODELS = {"gate_ocr": {"enabled": False}, "face_anonymize": {"enabled": False}}
DOWN_CLOUD = {"cloud_url": "http://127.0.0.1:9", "token": "device-token-of-a-cloud-that-is-down"}


async def test_every_route_the_daemon_mounts_is_documented(tmp_path: Path) -> None:
    daemon = Daemon(site_config(tmp_path, inference=NO_MODELS, sync=DOWN_CLOUD))
    await daemon.start()
    try:
        app = create_app(token=None, max_frame_bytes=1 << 20)
        for add_routes in API_ROUTES:
            add_routes(app, daemon)
        mounted = mounted_operations(app)
    finally:
        await daemon.stop()
    assert ("GET", OPENAPI_PATH) in mounted and ("GET", "/v1/sync") in mounted
    undocumented = mounted - documented_operations()
    assert undocumented == set(), "add these routes to appliance/openapi.py _paths()"


def test_the_model_update_routes_are_documented() -> None:
    """Mounted only with ``[updates] keyring_file``; registering them runs no handler."""
    app = web.Application()
    add_model_routes(app, cast(ModelUpdates, None))
    mounted = mounted_operations(app)
    assert ("POST", "/v1/models/{task}/rollback") in mounted
    assert mounted - documented_operations() == set()


def test_the_document_loads_and_filters_to_what_is_mounted() -> None:
    full = openapi_document()
    schema = schemathesis.openapi.from_dict(full)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} == documented_operations()
    without_sync = openapi_document([("GET", "/v1/status"), ("POST", "/v1/frames")])
    assert set(without_sync["paths"]) == {"/v1/status", "/v1/frames"}
    assert without_sync["components"] == full["components"]
