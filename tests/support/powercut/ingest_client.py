"""A bare HTTP client for the ingest server in the power-cut campaign (stdlib only:
the server is killed under it, so every call is one short connection)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import subprocess
import urllib.parse
from pathlib import Path

from tests.support.ingest_process import YARDLINK

__all__ = ["provision", "put_batch", "tus", "tus_create"]


def provision(data_dir: Path) -> str:
    """``yardlink ingest device add gate-01``: the device's token."""
    out = subprocess.run(
        [YARDLINK, "ingest", "device", "add", "gate-01", "--site", "yard-a"]
        + ["--data-dir", str(data_dir), "--json"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return str(json.loads(out.stdout)["token"])


def _request(
    url: str, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str]]:
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=20)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


def put_batch(url: str, token: str, batch_id: str, body: bytes) -> int:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.apache.parquet"}
    return _request(url, "PUT", f"/v1/batches/{batch_id}", body, headers)[0]


def tus(
    url: str, token: str, method: str, location: str, body: bytes = b"", offset: int | None = None
) -> tuple[int, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
    if offset is not None:
        headers |= {"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
    return _request(url, method, location, body, headers)


def tus_create(url: str, token: str, payload: bytes) -> str:
    """A new upload for ``payload`` (raw_sampled, with its sha256); its path."""
    metadata = ",".join(
        f"{k} {base64.b64encode(v.encode()).decode()}"
        for k, v in {"sha256": hashlib.sha256(payload).hexdigest(), "stream": "raw_sampled"}.items()
    )
    headers = {"Upload-Length": str(len(payload)), "Upload-Metadata": metadata}
    status, got = _request(
        url,
        "POST",
        "/v1/uploads/",
        b"",
        {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0", **headers},
    )
    if status != 201:
        raise OSError(f"upload not created: {status}")
    return urllib.parse.urlsplit(got["location"]).path
