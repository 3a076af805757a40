"""Test plumbing for the sync side: the REAL ingest service on a loopback port, a blob
directory implementing the ``BlobSource`` port, event payloads, and lake readers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pyarrow.parquet as pq
from aiohttp import web

from cloud_ingest.app import build_app
from cloud_ingest.app_keys import CATALOG
from cloud_ingest.catalog import RawRequestRecord
from cloud_ingest.middleware import IngestAppRunner
from cloud_ingest.provisioning import add_device
from cloud_ingest.settings import IngestSettings
from sync.outbox import BlobRef
from sync.protocol import RawRequest, Stream
from yardlink.localstack import IngestProcess

DEVICE, SITE = "gate-01", "yard-a"


@dataclass
class RunningIngest:
    app: web.Application
    settings: IngestSettings
    port: int
    token: str
    requests: list[tuple[float, str, str]] = field(default_factory=list)  # (t, method, path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def put_batch(self, batch_id: str, body: bytes) -> int:
        """PUT a batch as the test device, straight to the service; the status."""
        async with (
            aiohttp.ClientSession() as http,
            http.put(
                f"{self.url}/v1/batches/{batch_id}",
                data=body,
                headers={"Authorization": f"Bearer {self.token}"},
            ) as answer,
        ):
            return answer.status

    async def add_raw_request(self, request_id: str, seq: int) -> None:
        now = time.time()
        await self.app[CATALOG].add_raw_request(
            RawRequestRecord(
                request_id=request_id,
                device_id=DEVICE,
                created_by="test",
                created_at=now,
                expires_at=now + 3600,
                seq=seq,
            )
        )

    async def raw_request_state(self, request_id: str) -> str:
        record = await self.app[CATALOG].get_raw_request(request_id)
        assert record is not None
        return record.state


Middleware = Callable[[web.Request, Callable[[web.Request], object]], object]


@asynccontextmanager
async def running_ingest(
    data_dir: Path,
    *,
    middlewares: list[object] | None = None,
    customize: Callable[[web.Application], None] | None = None,
) -> AsyncIterator[RunningIngest]:
    """Start the real service on 127.0.0.1 (free port) with one device; stop it on exit."""
    settings = IngestSettings(data_dir=data_dir, sweep_interval_s=3600)
    app = build_app(settings)
    if customize is not None:
        customize(app)
    seen: list[tuple[float, str, str]] = []

    @web.middleware
    async def record(request: web.Request, handler: Callable[..., object]) -> web.StreamResponse:
        seen.append((time.monotonic(), request.method, request.path))
        response = await handler(request)  # type: ignore[misc]
        assert isinstance(response, web.StreamResponse)
        return response

    app.middlewares.insert(0, record)
    for extra in reversed(middlewares or []):
        app.middlewares.insert(0, extra)  # type: ignore[arg-type]
    runner = IngestAppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    port = server.sockets[0].getsockname()[1]
    created = await add_device(app[CATALOG], DEVICE, SITE, actor="test", now=time.time())
    try:
        yield RunningIngest(app, settings, port, created.token, seen)
    finally:
        await runner.cleanup()


def event_payload(i: int, *, plate_token: str = "tok-abc") -> bytes:
    row = {
        "event_time": 1_800_000_000.0 + i,
        "model_name": "ppocr",
        "model_version": "4.0",
        "camera_id": "cam-1",
        "task": "gate_ocr",
        "latency_ms": 12.5,
        "sla_violated": False,
        "results": [
            {
                "kind": "container_code",
                "value": f"MSKU{i % 1_000_000:06d}5",
                "confidence": 0.9,
                "valid": True,
                "box": [10, 20, 300, 80],
            },
            {"kind": "plate", "value": plate_token, "confidence": 0.8, "valid": None, "box": None},
        ],
        "raw_sha256": None,
    }
    return json.dumps(row, separators=(",", ":")).encode()


def lake_seqs(data_dir: Path, stream: Stream) -> list[int]:
    """Every seq in the lake for ``stream`` (duplicates kept, so a test can see them)."""
    seqs: list[int] = []
    for path in sorted((data_dir / "lake" / stream.value).rglob("*.parquet")):
        seqs.extend(pq.read_table(path, columns=["seq"]).column("seq").to_pylist())
    return seqs


def blob_file(data_dir: Path, sha256: str) -> Path:
    return data_dir / "blobs" / sha256[:2] / sha256


@dataclass
class BlobDir:
    """``BlobSource`` over a plain directory of files named by sha256 (test stand-in for the
    appliance's encrypted blob store); ``by_seq`` answers raw requests."""

    root: Path
    by_seq: dict[int, BlobRef] = field(default_factory=dict)
    opened: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)

    def add(self, data: bytes, *, seq: int | None = None) -> BlobRef:
        sha = hashlib.sha256(data).hexdigest()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / sha).write_bytes(data)
        meta = {} if seq is None else {"seq": str(seq)}
        ref = BlobRef(sha, len(data), meta)
        if seq is not None:
            self.by_seq[seq] = ref
            index = {str(k): v.sha256 for k, v in self.by_seq.items()}
            (self.root / "index.json").write_text(json.dumps(index))
        return ref

    def _load_index(self) -> None:
        """Another process added the blobs: read its seq -> sha256 index."""
        path = self.root / "index.json"
        if not self.by_seq and path.exists():
            for seq, sha in json.loads(path.read_text()).items():
                size = (self.root / sha).stat().st_size
                self.by_seq[int(seq)] = BlobRef(sha, size, {"seq": seq})

    async def open_for_upload(self, ref: BlobRef) -> Path:
        self.opened.append(ref.sha256)
        path = self.root / ref.sha256
        if not path.exists():
            raise FileNotFoundError(path)
        return path

    async def release_upload(self, path: Path) -> None:
        """The stored file itself was handed out: keep it, count the release."""
        self.released.append(path.name)

    async def resolve_raw_request(self, request: RawRequest) -> list[BlobRef]:
        self._load_index()
        ref = self.by_seq.get(request.seq) if request.seq is not None else None
        return [] if ref is None else [ref]


class CloudProcess(IngestProcess):
    """``yardlink ingest serve`` as a real process (SIGKILL-able), started, with the
    test device registered (``token``)."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.token = self.add_device(DEVICE, SITE)
        self.start()

    def close(self) -> None:
        self.stop(timeout=30)
