"""A crash between a tus upload's last durable byte and its finish: the server finishes it.

The power-cut campaign (tests/powercut/test_ingest_powercut.py) found the window:
the last PATCH's bytes are fsynced, then the server dies before ``_finish``
adopts the blob. After a restart HEAD answered the full offset, so a client
(ours included: ``TusUploadState.done``) stopped, and the blob never reached the
blob store. Here the window is made by hand: every byte written to the upload's
data file, as the PATCH would have left it, then a new server.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cloud_ingest.settings import IngestSettings
from tests.support.ingest import bearer, running_ingest

TUS = {"Tus-Resumable": "1.0.0"}


def _metadata(payload: bytes) -> str:
    fields = {"sha256": hashlib.sha256(payload).hexdigest(), "stream": "raw_sampled"}
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


async def test_upload_whose_bytes_all_landed_is_finished_after_a_restart(tmp_path: Path) -> None:
    settings = IngestSettings(data_dir=tmp_path / "data", sweep_interval_s=3600)
    payload = os.urandom(100_000)
    digest = hashlib.sha256(payload).hexdigest()
    async with running_ingest(settings) as ingest:
        token = await ingest.device()
        created = await ingest.client.post(
            "/v1/uploads/",
            headers=bearer(token)
            | TUS
            | {"Upload-Length": str(len(payload)), "Upload-Metadata": _metadata(payload)},
        )
        assert created.status == 201
        location = created.headers["Location"]
    upload_id = location.rstrip("/").rsplit("/", 1)[1]
    (settings.data_dir / "uploads" / f"{upload_id}.bin").write_bytes(payload)  # then the crash

    async with running_ingest(settings) as ingest:
        head = await ingest.client.head(location, headers=bearer(token) | TUS)
        assert head.status == 200
        assert head.headers["Upload-Offset"] == str(len(payload))
        blob = await ingest.client.head(f"/v1/blobs/{digest}", headers=bearer(token))
        assert blob.status == 200, "the upload's bytes are all there but the blob is not"
        assert (settings.data_dir / "blobs" / digest[:2] / digest).read_bytes() == payload
