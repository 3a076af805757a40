"""The shared catalog's database goes away under a running service: requests are answered
503 ``catalog_unreachable`` with Retry-After (clients retry), never a 500."""

from __future__ import annotations

from pathlib import Path

from cloud_ingest.settings import IngestSettings
from tests.support.ingest import bearer, running_ingest
from tests.support.postgres import running_postgres

TUS = {"Tus-Resumable": "1.0.0"}


async def test_a_lost_database_is_503_and_retryable(tmp_path: Path) -> None:
    database = running_postgres()  # its own server: this test stops it
    server = database.__enter__()
    stopped = False
    try:
        url = await server.create_database()
        settings = IngestSettings(data_dir=tmp_path / "data", sweep_interval_s=3600, catalog=url)
        async with running_ingest(settings) as ingest:
            token = await ingest.device()
            sync = {"device_id": "gate-01", "site_id": "yard-a"}
            ok = await ingest.client.post("/v1/sync", json=sync, headers=bearer(token))
            assert ok.status == 200, await ok.text()
            database.__exit__(None, None, None)
            stopped = True
            for method, path in (("POST", "/v1/sync"), ("GET", "/v1/admin/devices")):
                response = await ingest.client.request(
                    method, path, json=sync, headers=bearer(token)
                )
                assert response.status == 503, await response.text()
                body = await response.json()
                assert body["error"] == "catalog_unreachable"
                assert response.headers["Retry-After"] == "5"
    finally:
        if not stopped:
            database.__exit__(None, None, None)
