"""Fleet benchmark: a thousand appliances reconnect at once and drain against N ingest instances.

Each simulated appliance is the real device-side client code (``CloudClient``,
``TusUploader``, ``LinkMonitor``'s jittered backoff) with a small synthetic
backlog: one handshake, one batch of events, a few raw blobs (tus, sha256 in
the metadata).  All start at the same instant, as after an outage; every
request goes to a randomly chosen instance (no stickiness: a tus upload's
PATCHes land on any instance).  Instances are ``yardlink ingest serve``
processes sharing one PostgreSQL catalog and one S3 store (SeaweedFS), both
started here on loopback; the anchor in the same run is one instance on its
embedded SQLite catalog and data directory, under the same load.

Checked after each run (the run fails otherwise): every record in the lake
exactly once, every blob byte-exact in the store, no request answered 5xx.
Rows: drain time, p50/p99 request latency, records/s, MB/s and CPU seconds per
instance for 1, 2 and 3 instances, and the request rate over time (peak
second / mean: a synchronised retry storm shows as a high peak).

    python -m bench.fleet [--quick]     (--quick: 100 devices, 1-2 instances)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import psutil
import pyarrow.dataset as ds

from bench._common import Row, command_for, parse_args, row, write_results
from cloud_ingest.catalog_open import open_catalog
from cloud_ingest.provisioning import add_device
from cloud_ingest.settings import IngestSettings
from cloud_ingest.storage import Storage, open_storage
from sync.cloud_client import CloudClient, HttpAnswer
from sync.engine_state import EngineStateFile
from sync.errors import CloudRejected, CloudUnavailable, RetryableUploadError
from sync.link import LinkMonitor
from sync.protocol import Stream, SyncRequest, UploadMetadata, make_batch_id
from sync.protocol.parquet import STREAM_SCHEMAS, encode_batch
from sync.settings import LinkSettings
from sync.uploader import ChunkSizer, TusUploader
from tests.support.ingest import event_records
from tests.support.postgres import PostgresServer, running_postgres
from tests.support.seaweed import SeaweedS3, running_seaweed

NAME = "fleet"
BUCKET = "fleet-bench"
_START_TIMEOUT_S = 120.0


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


async def _appliance(
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


@dataclass
class Instances:
    processes: list[subprocess.Popen[bytes]]
    bases: list[str]

    def cpu_s(self) -> list[float]:
        times = [psutil.Process(p.pid).cpu_times() for p in self.processes]
        return [t.user + t.system for t in times]


@contextmanager
def _serve(data_dirs: list[Path], extra: list[str], env: Mapping[str, str]) -> Iterator[Instances]:
    yardlink = str(Path(sys.executable).parent / "yardlink")
    processes, logs = [], []
    try:
        for data_dir in data_dirs:
            log = data_dir.parent / f"{data_dir.name}.log"
            config = data_dir.parent / f"{data_dir.name}.toml"
            # every simulated device connects from 127.0.0.1: lift the per-address cap
            config.write_text(f'data_dir = "{data_dir}"\nmax_connections_per_address = 100000\n')
            with log.open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        [yardlink, "ingest", "serve", "--config", str(config), "--port", "0"]
                        + extra,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=out,
                        env={**os.environ, **env},
                    )
                )
            logs.append(log)
        yield Instances(
            processes, [_wait_listening(p, log) for p, log in zip(processes, logs, strict=True)]
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_listening(process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        for line in log.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("msg") == "listening":
                return f"http://127.0.0.1:{entry['port']}"
        time.sleep(0.05)
    raise RuntimeError(f"ingest instance did not start: {log.read_text()[-800:]}")


async def _provision(settings: IngestSettings, load: Load, work: Path) -> list[Device]:
    catalog = await open_catalog(settings)
    devices = []
    try:
        for n in range(load.devices):
            device_id, site_id = f"gate-{n:05d}", f"yard-{n % 20:02d}"
            created = await add_device(catalog, device_id, site_id, actor="bench", now=time.time())
            blobs = []
            for b in range(load.blobs):
                path = work / f"{device_id}-{b}.bin"
                path.write_bytes(secrets.token_bytes(load.blob_bytes))
                blobs.append(path)
            devices.append(Device(device_id, site_id, created.token, tuple(blobs)))
    finally:
        await catalog.close()
    return devices


@dataclass(frozen=True)
class RunResult:
    label: str
    instances: int
    drain_s: float
    latency_p50_s: float
    latency_p99_s: float
    records: int
    blob_bytes: int
    cpu_s: list[float]
    requests: int
    per_second: list[int]
    per_instance: list[int]
    statuses: dict[int, int]  # answers by HTTP status (0: none: refused, reset, timeout)
    db_transactions: int | None  # PostgreSQL transactions the instances ran (None: SQLite)

    @property
    def cpu_ms_per_request(self) -> float:
        """CPU of every instance together, per request answered."""
        return sum(self.cpu_s) / self.requests * 1000

    @property
    def busiest_cpu_ms_per_request(self) -> float:
        """CPU per request of the instance that used the most CPU (its own requests)."""
        busiest = max(range(self.instances), key=lambda n: self.cpu_s[n])
        return self.cpu_s[busiest] / max(self.per_instance[busiest], 1) * 1000


def _check(storage: Storage, devices: list[Device], load: Load, tally: Tally) -> None:
    """Every record once, every blob byte-exact, no 5xx (AssertionError otherwise)."""
    server_errors = {s: n for s, n in tally.statuses.items() if s >= 500}
    assert not server_errors, f"requests answered 5xx: {server_errors}"
    fs, path = storage.store.arrow_location(f"{storage.lake.prefix}/events")
    dataset = ds.dataset(
        path,
        filesystem=fs,
        format="parquet",
        partitioning="hive",
        schema=STREAM_SCHEMAS[Stream.EVENTS],
    )
    table = dataset.to_table(columns=["device_id", "seq"])
    keys = list(zip(table["device_id"].to_pylist(), table["seq"].to_pylist(), strict=True))
    expected = {(d.device_id, s) for d in devices for s in range(1, load.events + 1)}
    assert len(keys) == len(set(keys)) and set(keys) == expected, "lake records not exactly once"
    for device in devices:
        for blob in device.blobs:
            data = blob.read_bytes()
            assert storage.blobs.read(hashlib.sha256(data).hexdigest()) == data, blob


def run_once(
    label: str,
    settings: list[IngestSettings],
    extra: list[str],
    env: Mapping[str, str],
    load: Load,
    work: Path,
) -> RunResult:
    """Start the instances, release the fleet at once, wait for it to drain, check."""
    devices = asyncio.run(_provision(settings[0], load, work))
    storage = open_storage(settings[0])
    tally = Tally()
    catalog = settings[0].catalog
    transactions_before = asyncio.run(_transactions(catalog)) if catalog else 0
    with _serve([s.data_dir for s in settings], extra, env) as instances:
        cpu_before = instances.cpu_s()

        async def fleet() -> float:
            started = time.monotonic()
            drain = asyncio.gather(
                *(
                    _appliance(d, instances.bases, load, tally, work, seed=n)
                    for n, d in enumerate(devices)
                )
            )
            try:
                await asyncio.wait_for(drain, load.deadline_s)
            except TimeoutError:
                raise RuntimeError(
                    f"the fleet did not drain in {load.deadline_s:.0f} s: {dict(tally.statuses)}"
                ) from None
            return time.monotonic() - started

        drain_s = asyncio.run(fleet())
        bases = instances.bases
        cpu = [after - before for before, after in zip(cpu_before, instances.cpu_s(), strict=True)]
    db_transactions = None
    if catalog:  # the instances have stopped: their backends flushed their statistics
        db_transactions = asyncio.run(_transactions(catalog)) - transactions_before
    _check(storage, devices, load, tally)
    first = min(tally.started)
    seconds = Counter(int(t - first) for t in tally.started)
    latency = sorted(tally.latency)
    return RunResult(
        label=label,
        instances=len(settings),
        drain_s=drain_s,
        latency_p50_s=statistics.median(latency),
        latency_p99_s=latency[int(0.99 * (len(latency) - 1))],
        records=load.devices * load.events,
        blob_bytes=load.devices * load.blobs * load.blob_bytes,
        cpu_s=cpu,
        requests=len(tally.started),
        per_second=[seconds.get(s, 0) for s in range(max(seconds) + 1)],
        per_instance=[tally.by_instance[base] for base in bases],
        statuses=dict(sorted(tally.statuses.items())),
        db_transactions=db_transactions,
    )


async def _transactions(url: str) -> int:
    """Transactions run in the catalog's database so far (each lone statement is one),
    once no other session is connected: a backend reports its counts as it exits."""
    conn = await asyncpg.connect(url)
    try:
        async with asyncio.timeout(60):
            while await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ):
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # and its report reached the statistics
        value = await conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        )
        return int(value)
    finally:
        await conn.close()


def run_sqlite_anchor(load: Load, root: Path) -> RunResult:
    data = root / "sqlite-1" / "data"
    data.mkdir(parents=True)
    settings = IngestSettings(data_dir=data)
    return run_once("sqlite, 1 instance", [settings], [], {}, load, root / "sqlite-1")


async def _new_database(postgres: PostgresServer) -> str:
    return await postgres.create_database()


def run_fleet(
    instances: int, load: Load, root: Path, seaweed: SeaweedS3, postgres: PostgresServer
) -> RunResult:
    work = root / f"fleet-{instances}"
    work.mkdir(parents=True)
    catalog = asyncio.run(_new_database(postgres))
    store = seaweed.store_url(BUCKET, prefix=f"run-{secrets.token_hex(4)}")
    seaweed.store(BUCKET)  # creates the bucket
    settings = [
        IngestSettings(
            data_dir=work / f"instance-{n}",
            catalog=catalog,
            store=store,
            store_access_key_id=seaweed.access_key,
            store_secret_access_key=seaweed.secret_key,  # type: ignore[arg-type]
        )
        for n in range(instances)
    ]
    extra = ["--catalog", catalog, "--store", store]
    label = f"PostgreSQL + S3, {instances} instance{'s' if instances > 1 else ''}"
    return run_once(label, settings, extra, seaweed.env(), load, work)


def rows_for(results: list[RunResult], quick: bool) -> list[Row]:
    command = command_for(NAME, quick)
    anchor = results[0]
    anchor_rate = anchor.records / anchor.drain_s
    anchor_cpu = anchor.cpu_ms_per_request
    rows = []
    for r in results:
        figures = [
            ("drain time", r.drain_s, "s", anchor.drain_s),
            ("records/s", r.records / r.drain_s, "rec/s", anchor_rate),
            ("blob MB/s", r.blob_bytes / r.drain_s / 1e6, "MB/s", None),
            ("request p50", r.latency_p50_s * 1000, "ms", anchor.latency_p50_s * 1000),
            ("request p99", r.latency_p99_s * 1000, "ms", anchor.latency_p99_s * 1000),
            ("CPU s of the busiest instance", max(r.cpu_s), "s", None),
            ("CPU per request, all instances", r.cpu_ms_per_request, "ms", anchor_cpu),
            ("CPU per request, busiest instance", r.busiest_cpu_ms_per_request, "ms", None),
            ("request rate, peak second / mean", _peak_ratio(r.per_second), "x", None),
        ]
        if r.db_transactions is not None:
            figures.append(
                ("PostgreSQL transactions per request", r.db_transactions / r.requests, "", None)
            )
        for metric, value, unit, anchor_value in figures:
            rows.append(
                row(
                    f"{r.label}: {metric}",
                    value,
                    unit,
                    goal="informational (2 shared cores: modest scaling)",
                    command=command,
                    anchor=anchor.label if anchor_value is not None else None,
                    anchor_value=anchor_value,
                )
            )
    return rows


def _peak_ratio(per_second: list[int]) -> float:
    return max(per_second) / statistics.mean(per_second)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(NAME, argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    load = Load(devices=100 if args.quick else 1000)
    counts = [1, 2] if args.quick else [1, 2, 3]
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-bench-")))
        seaweed = stack.enter_context(running_seaweed(root / "seaweed"))
        postgres = stack.enter_context(running_postgres())
        results = [run_sqlite_anchor(load, root)]
        results += [run_fleet(n, load, root, seaweed, postgres) for n in counts]
    for r in results:
        print(
            f"{r.label}: drain {r.drain_s:.1f} s, {r.requests} requests, CPU {r.cpu_s} s"
            f" ({r.cpu_ms_per_request:.1f} ms/request; busiest"
            f" {r.busiest_cpu_ms_per_request:.1f}), PostgreSQL transactions {r.db_transactions},"
            f" per second {r.per_second}"
        )
    rows = rows_for(results, args.quick)
    write_results(NAME, rows, args.out)
    series = {r.label: {"per_second": r.per_second, "cpu_s": r.cpu_s} for r in results}
    args.out.with_name(f"{NAME}.series.json").write_text(json.dumps(series, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
