"""The simulated appliances of the fleet benchmark: each is the real device-side client
code (``CloudClient``, ``TusUploader``, ``LinkMonitor``'s jittered backoff) with a small
synthetic backlog, every request to a random instance and tallied."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sync.cloud_client import CloudClient, HttpAnswer
from sync.engine_state import EngineStateFile
from sync.errors import CloudRejected, CloudUnavailable, RetryableUploadError
from sync.link import LinkMonitor
from sync.protocol import Stream, SyncRequest, UploadMetadata, make_batch_id
from sync.protocol.parquet import encode_batch
from sync.settings import LinkSettings
from sync.uploader import ChunkSizer, TusUploader
from tests.support.ingest import event_records

__all__ = ["Device", "Load", "RoutedClient", "ServerError", "Tally", "appliance"]


@dataclass(frozen=True)
class Load:
    devices: int
    events: int = 40  # per device, one batch
    blobs: int = 2  # per device
    blob_bytes: int = 48 << 10
    chunk_bytes: int = 32 << 10  # so a blob takes two PATCHes, likely on two instances
    deadline_s: float = 1800.0  # the run fails when the fleet has not drained by then


@dataclass
class Tally:
    """What the simulated fleet saw: one entry per request."""

    started: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)  # 0: no answer (connect, reset)
    by_instance: Counter[str] = field(default_factory=Counter)


class RoutedClient(CloudClient):
    """The device's HTTP client, each request to a random instance; tallies every request."""

    def __init__(self, bases: list[str], token: str, rng: random.Random, tally: Tally) -> None:
        super().__init__(bases[0], token, request_timeout_s=120.0)
        self.bases, self.rng, self.tally = bases, rng, tally

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            path = "/" + path.split("/", 3)[3]  # a Location from another instance
        base = self.rng.choice(self.bases)
        self.tally.by_instance[base] += 1
        return base + path

    async def request(self, method: str, path: str, **kw: object) -> HttpAnswer:  # type: ignore[override]
        started = time.monotonic()
        self.tally.started.append(started)
        status = 0
        try:
            answer = await super().request(method, path, **kw)  # type: ignore[arg-type]
            status = answer.status
            return answer
        except CloudRejected as exc:
            status = exc.status
            raise
        except CloudUnavailable as exc:
            text = str(exc)
            status = int(text.split("HTTP ", 1)[1][:3]) if "HTTP " in text else 0
            if status >= 500:  # the run fails at once: no 5xx is allowed (no retry storm)
                raise ServerError(f"{method} {path}: {text[:300]}") from exc
            raise
        finally:
            self.tally.latency.append(time.monotonic() - started)
            self.tally.statuses[status] += 1


class ServerError(RuntimeError):
    """An instance answered 5xx: the run fails (the fleet must drain without any)."""


@dataclass(frozen=True)
class Device:
    device_id: str
    site_id: str
    token: str
    blobs: tuple[Path, ...]


async def _until_done(step: object, link: LinkMonitor) -> None:
    """Run ``step`` (a coroutine function) until it succeeds, backing off with jitter."""
    while True:
        try:
            await step()  # type: ignore[operator]
            link.succeeded(time.monotonic())
            return
        except (CloudUnavailable, RetryableUploadError) as exc:
            link.failed(time.monotonic(), str(exc))
            await asyncio.sleep(link.retry_after_s(retryable=True))


async def appliance(
    device: Device, bases: list[str], load: Load, tally: Tally, work: Path, seed: int
) -> None:
    rng = random.Random(seed)
    client = RoutedClient(bases, device.token, rng, tally)
    link = LinkMonitor(LinkSettings(backoff_initial_s=0.2, backoff_max_s=5.0), rng=rng)
    sizer = ChunkSizer(load.chunk_bytes, load.chunk_bytes, 1.0)
    uploader = TusUploader(client, EngineStateFile(work / f"{device.device_id}.json"), sizer)
    records = event_records(device.device_id, device.site_id, range(1, load.events + 1))
    body = encode_batch(Stream.EVENTS, records)
    batch_id = make_batch_id(device.device_id, Stream.EVENTS, 1, load.events)
    hello = SyncRequest(device_id=device.device_id, site_id=device.site_id)
    try:
        await _until_done(lambda: client.handshake(hello), link)
        await _until_done(lambda: client.put_batch(batch_id, body), link)
        for n, path in enumerate(device.blobs):
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            meta = UploadMetadata(sha256=sha, stream=Stream.RAW_SAMPLED, seq=n + 1)
            await _until_done(lambda p=path, m=meta: uploader.upload(p, m), link)  # type: ignore[misc]
    finally:
        await client.close()
