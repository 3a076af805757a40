"""Fuzzing the local API: whatever a camera or a technician sends, never a 5xx, errors are JSON.

One daemon (with the sync routes, against the real ingest) serves every example:
hypothesis reuses the function-scoped fixture on purpose, over real loopback HTTP.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.daemon import Daemon
from appliance.sources.synthetic import SyntheticYardCamera
from tests.appliance.daemon_harness import TOKEN, base_url, site_config
from tests.sync.ingest_server import DEVICE, SITE, running_ingest

_JPEG = SyntheticYardCamera(5).frame(0).encode()


@pytest.fixture
async def fuzz_daemon(tmp_path: Path) -> AsyncIterator[tuple[Daemon, aiohttp.ClientSession]]:
    async with running_ingest(tmp_path / "cloud") as ingest:
        config = site_config(
            tmp_path,
            site={"device_id": DEVICE, "site_id": SITE, "data_dir": str(tmp_path / "var")},
            sync={"cloud_url": ingest.url, "token": ingest.token},
            sources={"cameras": [{"id": "gate-in"}], "queue_bound": 4},
        )
        daemon = Daemon(config)
        await daemon.start()
        try:
            async with aiohttp.ClientSession() as session:
                yield daemon, session
        finally:
            await daemon.stop()


header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mutated_jpeg(draw: st.DrawFn) -> bytes:
    """The valid frame with a few bytes changed in its header, maybe cut short."""
    body = bytearray(_JPEG)
    for _ in range(draw(st.integers(1, 6))):
        body[draw(st.integers(0, 600))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        return bytes(body[: draw(st.integers(0, len(body)))])
    return bytes(body)


other_bodies = st.one_of(
    st.just(b""), st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())
)
bandwidth_bodies = st.fixed_dictionaries(
    {
        "bps": st.sampled_from([float("inf"), float("nan"), 10**400, 5e-324, 0, -1, None])
        | st.floats()
        | st.integers()
        | json_values
    },
    optional={"x": json_values},
).map(lambda v: json.dumps(v).encode())
frame_bodies = st.one_of(st.just(_JPEG), st.just(b"\xff\xd8\xff" + b"\x00" * 200), mutated_jpeg())
_ROUTES = [
    ("POST", "/v1/frames"),
    ("GET", "/v1/status"),
    ("GET", "/metrics"),
    ("GET", "/v1/sync"),
    ("PUT", "/v1/sync/bandwidth"),
    ("POST", "/v1/sync/pause"),
    ("POST", "/v1/sync/resume"),
    ("POST", "/v1/sync/now"),
]
_OTHER_PATHS = ["/", "/v1/frames/x", "/v1/%00", "/v1/events/x"]
_BODIES_FOR = {"/v1/sync/bandwidth": bandwidth_bodies, "/v1/frames": frame_bodies}

requests = st.one_of(
    # mostly the real routes with the right method; the two that take a body more often
    st.sampled_from(_ROUTES + [("PUT", "/v1/sync/bandwidth")] * 4 + [("POST", "/v1/frames")] * 2),
    st.tuples(
        st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
        st.sampled_from([path for _, path in _ROUTES] + _OTHER_PATHS),
    ),
)


@st.composite
def request_bodies(draw: st.DrawFn, path: str) -> bytes:
    return draw(_BODIES_FOR.get(path, other_bodies) | other_bodies)


@settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    request=requests,
    authorized=st.sampled_from([True, True, True, False]),
    content_type=st.sampled_from(["image/jpeg", "image/png", "application/json", "text/plain"])
    | st.none()
    | header_text,
    extra_headers=st.dictionaries(
        st.sampled_from(["X-Camera-Id", "X-Frame-Metadata", "Content-Encoding", "Accept"]),
        header_text | json_values.map(json.dumps).filter(lambda s: s.isascii()),
        max_size=3,
    ),
    query=st.dictionaries(
        st.sampled_from(["camera", "limit", "since", "x"]),
        st.sampled_from(["gate-in", "gate-in", "nope", "", "-1", "1e400"]) | header_text,
        max_size=3,
    ),
    data=st.data(),
)
async def test_no_input_makes_the_api_fail(
    fuzz_daemon: tuple[Daemon, aiohttp.ClientSession],
    request: tuple[str, str],
    authorized: bool,
    content_type: str | None,
    extra_headers: dict[str, str],
    query: dict[str, str],
    data: st.DataObject,
) -> None:
    daemon, http = fuzz_daemon
    method, path = request
    body = data.draw(request_bodies(path), label="body")
    headers: dict[str, Any] = {**extra_headers}
    if authorized:
        headers["Authorization"] = f"Bearer {TOKEN}"
    if content_type is not None:
        headers["Content-Type"] = content_type
    url = base_url(daemon) + path + ("?" + urllib.parse.urlencode(query) if query else "")
    async with http.request(
        method,
        url,
        data=body if method not in ("GET", "HEAD") else None,
        headers=headers,
        skip_auto_headers=["Content-Type"],
    ) as response:
        payload = await response.read()
    assert response.status < 500, (response.status, payload[:300])
    if response.status >= 400 and method != "HEAD":
        error = json.loads(payload, parse_constant=_no_constant)
        assert set(error) == {"error", "detail"}, error
        assert "Traceback" not in error["detail"]
    elif 200 <= response.status < 300 and method != "HEAD" and path != "/metrics":
        json.loads(payload, parse_constant=_no_constant)  # answers are strict JSON


def _no_constant(name: str) -> object:
    raise AssertionError(f"{name} is not JSON")
