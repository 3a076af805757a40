"""SIGKILL during batch PUTs: after a restart the lake holds whole files, each batch once."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq

from cloud_ingest.lake import is_temp_file
from sync.protocol import Stream, make_batch_id
from sync.protocol.parquet import encode_batch
from tests.support.ingest import event_records
from tests.support.ingest_process import YARDLINK, IngestProcess


def _provision(data_dir: Path) -> str:
    out = subprocess.run(
        [
            YARDLINK,
            "ingest",
            "device",
            "add",
            "gate-01",
            "--site",
            "yard-a",
            "--data-dir",
            str(data_dir),
            "--json",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return str(json.loads(out.stdout)["token"])


def _put(url: str, token: str, batch_id: str, body: bytes) -> int:
    request = urllib.request.Request(
        f"{url}/v1/batches/{batch_id}",
        data=body,
        method="PUT",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/vnd.apache.parquet",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


BATCHES, RECORDS = 120, 1000


def _send_all(
    url: str,
    token: str,
    work: queue.Queue[tuple[str, bytes]],
    acknowledged: set[str],
    lock: threading.Lock,
) -> None:
    while True:
        try:
            batch_id, body = work.get_nowait()
        except queue.Empty:
            return
        try:
            status = _put(url, token, batch_id, body)
        except (urllib.error.URLError, ConnectionError, OSError):
            return  # the server died under us
        if status in (200, 201):
            with lock:
                acknowledged.add(batch_id)


def test_sigkill_during_batch_puts_leaves_no_partial_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    token = _provision(data_dir)
    batches = []
    for index in range(BATCHES):
        first = index * RECORDS + 1
        records = event_records("gate-01", "yard-a", range(first, first + RECORDS))
        batches.append(
            (
                make_batch_id("gate-01", Stream.EVENTS, first, first + RECORDS - 1),
                encode_batch(Stream.EVENTS, records),
            )
        )
    acknowledged: set[str] = set()
    lock = threading.Lock()

    with IngestProcess(data_dir) as server:
        work: queue.Queue[tuple[str, bytes]] = queue.Queue()
        for item in batches:
            work.put(item)
        senders = [
            threading.Thread(target=_send_all, args=(server.url, token, work, acknowledged, lock))
            for _ in range(4)
        ]
        for sender in senders:
            sender.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < BATCHES // 4 and time.monotonic() < deadline:
            time.sleep(0.002)
        server.kill()  # four PUTs are in flight right now
        for sender in senders:
            sender.join(timeout=30)
    assert BATCHES // 4 <= len(acknowledged) < BATCHES, "the kill should land mid-stream"

    with IngestProcess(data_dir) as server:
        lake = data_dir / "lake"
        assert not [p for p in lake.rglob("*") if is_temp_file(p.name)]
        for batch_id in acknowledged:  # every acknowledged batch survived
            assert list(lake.rglob(f"{batch_id}.parquet")), batch_id
        statuses = {batch_id: _put(server.url, token, batch_id, body) for batch_id, body in batches}
        assert set(statuses.values()) <= {200, 201}
        for batch_id in acknowledged:
            assert statuses[batch_id] == 200  # a retried acknowledged batch is a duplicate
    files = sorted((data_dir / "lake").rglob("*.parquet"))
    assert len(files) == BATCHES  # each batch stored exactly once
    assert not [p for p in (data_dir / "lake").rglob("*") if p.name.startswith(".")]
    assert sum(pq.read_metadata(p).num_rows for p in files) == BATCHES * RECORDS


def _tus(
    url: str,
    token: str,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str]]:
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=20)
    try:
        connection.request(
            method,
            path,
            body=body,
            headers={
                "Authorization": f"Bearer {token}",
                "Tus-Resumable": "1.0.0",
                **(headers or {}),
            },
        )
        response = connection.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


def _patch_all(url: str, token: str, location: str, payload: bytes, chunk: int) -> None:
    offset = 0
    while offset < len(payload):
        try:
            status, headers = _tus(
                url,
                token,
                "PATCH",
                location,
                payload[offset : offset + chunk],
                {"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
            )
        except OSError:
            return  # the server died under us
        if status != 204:
            return
        offset = int(headers["upload-offset"])


def test_sigkill_during_tus_uploads_keeps_offsets_true(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    token = _provision(data_dir)
    size, chunk = 6 << 20, 1 << 20
    payloads = [os.urandom(size) for _ in range(3)]
    with IngestProcess(data_dir) as server:
        locations = []
        for payload in payloads:
            digest = hashlib.sha256(payload).hexdigest()
            metadata = ",".join(
                f"{k} {base64.b64encode(v.encode()).decode()}"
                for k, v in {"sha256": digest, "stream": "raw_sampled"}.items()
            )
            status, headers = _tus(
                server.url,
                token,
                "POST",
                "/v1/uploads/",
                headers={"Upload-Length": str(size), "Upload-Metadata": metadata},
            )
            assert status == 201
            locations.append(urllib.parse.urlsplit(headers["location"]).path)
        senders = [
            threading.Thread(target=_patch_all, args=(server.url, token, location, payload, chunk))
            for location, payload in zip(locations, payloads, strict=True)
        ]
        for sender in senders:
            sender.start()
        uploads_dir = data_dir / "uploads"
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline
            and sum(p.stat().st_size for p in uploads_dir.glob("*.bin")) < size
        ):
            time.sleep(0.005)
        server.kill()  # PATCHes are in flight
        for sender in senders:
            sender.join(timeout=30)

    with IngestProcess(data_dir) as server:
        offsets = []
        for location in locations:
            status, headers = _tus(server.url, token, "HEAD", location)
            assert status == 200
            offset = int(headers["upload-offset"])
            upload_id = location.rsplit("/", 1)[1]
            assert offset == (uploads_dir / f"{upload_id}.bin").stat().st_size
            offsets.append(offset)
        assert sum(offsets) < 3 * size  # the kill landed before the uploads finished
        for location, payload in zip(locations, payloads, strict=True):
            _patch_all_from(server.url, token, location, payload, chunk)
            digest = hashlib.sha256(payload).hexdigest()
            assert _tus(server.url, token, "HEAD", f"/v1/blobs/{digest}")[0] == 200
            blob = data_dir / "blobs" / digest[:2] / digest
            assert blob.read_bytes() == payload


def _patch_all_from(url: str, token: str, location: str, payload: bytes, chunk: int) -> None:
    status, headers = _tus(url, token, "HEAD", location)
    offset = int(headers["upload-offset"])
    while offset < len(payload):
        status, headers = _tus(
            url,
            token,
            "PATCH",
            location,
            payload[offset : offset + chunk],
            {"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
        )
        assert status == 204, status
        offset = int(headers["upload-offset"])
