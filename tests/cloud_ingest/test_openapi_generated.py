"""Schemathesis against the ingest service's own OpenAPI document, over real loopback HTTP.

Every operation of ``cloud_ingest/openapi.py`` gets generated requests (valid
and invalid) with a device or an operator token; each answer must not be a 5xx,
must have the content type and body schema the document promises, and the
service must still answer afterwards.  At least 1,000 requests in the fast
suite; more under ``-m slow``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from cloud_ingest.openapi import openapi_document
from cloud_ingest.settings import IngestSettings
from tests.cloud_ingest.threaded_ingest import ThreadedIngest


@schemathesis.serializer("application/vnd.apache.parquet", "application/offset+octet-stream")
def _raw_bytes(ctx: schemathesis.SerializationContext, value: object) -> bytes:
    """Batch and tus bodies are bytes on the wire: sent as generated."""
    del ctx
    if isinstance(value, bytes):
        return value
    return str(value).encode()


schema = schemathesis.openapi.from_dict(openapi_document())
CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]
FAST_EXAMPLES = 35  # per operation: ~1,150 requests over the 23 operations
SLOW_EXAMPLES = 600
SENT: Counter[str] = Counter()
STATUSES: defaultdict[str, Counter[int]] = defaultdict(Counter)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedIngest]:
    data_dir: Path = tmp_path_factory.mktemp("openapi") / "data"
    with ThreadedIngest(
        IngestSettings(data_dir=data_dir, sweep_interval_s=3600, catalog_synchronous="NORMAL")
    ) as running:
        yield running


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def _call(case: schemathesis.Case, server: ThreadedIngest, http: requests.Session) -> None:
    role = "operator" if set(case.operation.tags or ()) & {"operator", "service"} else "device"
    headers = {"Authorization": f"Bearer {server.tokens[role]}"}
    if case.operation.label == "POST /v1/sync" and isinstance(case.body, dict):
        # as the device itself (else nearly every handshake is a 403 for another device)
        case.body |= {"device_id": server.device_id, "site_id": server.site_id}
    response = case.call(base_url=server.url, session=http, headers=headers, timeout=30)
    SENT[case.operation.label] += 1
    STATUSES[case.operation.label][response.status_code] += 1
    case.validate_response(response, checks=CHECKS)


@schema.parametrize()
@settings(
    max_examples=FAST_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_generated_requests(
    case: schemathesis.Case, server: ThreadedIngest, http: requests.Session
) -> None:
    _call(case, server, http)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=SLOW_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_slow(
    case: schemathesis.Case, server: ThreadedIngest, http: requests.Session
) -> None:
    _call(case, server, http)


def test_the_service_still_answers_after_the_generated_requests(
    server: ThreadedIngest, http: requests.Session
) -> None:
    assert sum(SENT.values()) >= 1_000, dict(SENT)
    assert STATUSES["POST /v1/sync"][200] > 0, STATUSES["POST /v1/sync"]  # real handshakes too
    assert http.get(f"{server.url}/healthz", timeout=10).status_code == 200
    handshake = http.post(
        f"{server.url}/v1/sync",
        json={"device_id": server.device_id, "site_id": server.site_id},
        headers={"Authorization": f"Bearer {server.tokens['device']}"},
        timeout=10,
    )
    assert handshake.status_code == 200, handshake.text
