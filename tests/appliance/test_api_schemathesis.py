"""Generated requests (schemathesis) against a real ``yardlink appliance run`` on loopback.

The daemon is the real process with its real outbox and its sync engine (pointed
at a closed port, so the sync routes are mounted and the link stays down); the two
inference tasks are disabled (the daemon allows that: frames are accepted, decoded
and stored, no model runs), which keeps start-up and each request cheap.  Every
documented operation but the never-ending ``GET /v1/events`` gets valid and invalid
requests with the technician token; schemathesis checks each answer against the
document (no 5xx, status, content type, body schema, auth enforced), and the
daemon must still answer afterwards.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import cv2
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from appliance.local_auth import make_token
from appliance.openapi import OPENAPI_PATH, documented_operations
from appliance.sources.synthetic import SyntheticYardCamera
from sync.shared.signing import Envelope, Keyring, SigningKey
from tests.appliance.config_harness import REPO
from yardlink.localstack import ApplianceProcess, write_site_toml

NOT_FUZZED = {("GET", "/v1/events")}  # a stream that never ends: tests/appliance/test_api.py
# Valid here also needs files on the appliance or a trusted signature, which no schema can
# say: a well-formed request may be refused (400/422), so acceptance is not checked.
STATE_DEPENDENT = {("POST", "/v1/models/install"), ("POST", "/v1/models/keyring")}


def _frames(extension: str) -> list[bytes]:
    """Real yard frames (synthetic camera, downscaled) as a camera would push them."""
    frames = []
    for seed in range(3):
        image = SyntheticYardCamera(seed).frame(seed).image_bgr
        small = cv2.resize(image, (160 + 32 * seed, 120 + 24 * seed))
        ok, encoded = cv2.imencode(extension, small)
        assert ok
        frames.append(encoded.tobytes())
    return frames


# A valid frame body is a decodable image of a sane size, which a JSON schema cannot say;
# schemathesis sends these for valid requests (and its own broken bodies for invalid ones).
schemathesis.openapi.media_type("image/jpeg", st.sampled_from(_frames(".jpg")))
schemathesis.openapi.media_type("image/png", st.sampled_from(_frames(".png")))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once closed


class RunningAppliance:
    def __init__(self, process: ApplianceProcess, token: str) -> None:
        self.process, self.url = process, process.api_url
        self.auth = {"Authorization": f"Bearer {token}"}
        self.session = requests.Session()

    def document(self) -> dict[str, Any]:
        answer = self.session.get(self.url + OPENAPI_PATH, headers=self.auth, timeout=10)
        assert answer.status_code == 200, answer.text
        document: dict[str, Any] = answer.json()
        return document

    def healthy(self) -> bool:
        answer = self.session.get(self.url + "/healthz", timeout=10)
        status = self.session.get(self.url + "/v1/status", headers=self.auth, timeout=10)
        return (
            self.process.running
            and answer.status_code == 200
            and answer.json()["ready"] is True
            and status.status_code == 200
        )


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAppliance]:
    work = tmp_path_factory.mktemp("schemathesis")
    token = make_token()
    key = SigningKey.generate()  # a release keyring, so the model-update routes are mounted
    keyring = Keyring(version=1, keys={key.public.keyid: key.public}, issued_at=1_700_000_000)
    keyring_file = work / "release-keyring.json"
    keyring_file.write_bytes(Envelope.sign(keyring.signed_document(), [key]).to_bytes())
    config = write_site_toml(
        work / "site.toml",
        {
            "version": 1,
            "models_dir": str(REPO / "models"),
            "site": {"device_id": "gate-01", "site_id": "depot-fuzz", "data_dir": str(work)},
            "outbox": {"path": str(work / "outbox")},
            "sync": {
                "cloud_url": f"http://127.0.0.1:{_closed_port()}",
                "token": "device-token-of-a-cloud-that-is-down",
            },
            "local_api": {"host": "127.0.0.1", "port": 0, "technician_token": token},
            "sources": {"cameras": [{"id": "gate-in"}, {"id": "gate-out"}]},
            "telemetry": {"interval_s": 3600},
            "inference": {"gate_ocr": {"enabled": False}, "face_anonymize": {"enabled": False}},
            "updates": {"keyring_file": str(keyring_file)},
        },
    )
    process = ApplianceProcess(config, token)
    process.start(timeout=120)
    try:
        yield RunningAppliance(process, token)
    finally:
        process.stop()


def _fuzz(appliance: RunningAppliance, examples: int) -> dict[str, int]:
    """Send ``examples`` valid and as many invalid requests per operation; count them."""
    schema = schemathesis.openapi.from_dict(appliance.document())
    # unknown query parameters are ignored (docs/OPERATIONS.md), as HTTP APIs commonly do
    schema.config.generation.update(allow_extra_parameters=False)
    sent: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if key in NOT_FUZZED:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                sent[f"{key[0]} {key[1]}"] = sent.get(f"{key[0]} {key[1]}", 0) + _fuzz_one(
                    appliance, operation, mode, examples, checked=key not in STATE_DEPENDENT
                )
            except Unsatisfiable:  # no parameter and no body: no invalid request exists
                assert mode is GenerationMode.NEGATIVE, key
    return sent


def _fuzz_one(
    appliance: RunningAppliance,
    operation: Any,
    mode: GenerationMode,
    examples: int,
    *,
    checked: bool,
) -> int:
    """Up to ``examples`` requests to one operation; how many were sent."""
    sent = 0
    excluded = [] if checked else [positive_data_acceptance]

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests each run: a failure reproduces
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: schemathesis.Case) -> None:
        nonlocal sent
        sent += 1
        case.call_and_validate(
            base_url=appliance.url,
            session=appliance.session,
            headers=dict(appliance.auth),
            excluded_checks=excluded,
            timeout=30,
        )

    call()
    return sent


def test_the_served_document_lists_the_mounted_routes(appliance: RunningAppliance) -> None:
    document = appliance.document()
    listed = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert {("GET", OPENAPI_PATH), ("POST", "/v1/frames"), ("PUT", "/v1/sync/bandwidth")} <= listed
    assert listed <= documented_operations()


def test_generated_requests_get_documented_answers(appliance: RunningAppliance) -> None:
    sent = _fuzz(appliance, examples=35)  # 1,000+ cases (and schemathesis' auth probes)
    assert sum(sent.values()) >= 1000, sent
    assert {"POST /v1/frames", "PUT /v1/sync/bandwidth", "POST /v1/models/keyring"} <= set(sent)
    assert appliance.healthy()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_many_more_generated_requests(appliance: RunningAppliance) -> None:
    sent = _fuzz(appliance, examples=500)
    assert sum(sent.values()) >= 8000, sent
    assert appliance.healthy()


@pytest.mark.parametrize("path", ["/tmp/a\x00b", "/tmp/\udbf7\udc98"])
def test_an_install_path_no_file_can_have_is_a_400(appliance: RunningAppliance, path: str) -> None:
    """Found by the generated requests: a NUL or a lone surrogate made open() raise a 500."""
    body = json.dumps({"archive": path, "manifest": path})  # \\u escapes, as a client sends
    answer = appliance.session.post(
        appliance.url + "/v1/models/install",
        data=body,
        headers={**appliance.auth, "Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "bad_request"
    assert appliance.healthy()
