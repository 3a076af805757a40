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
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pyarrow.dataset as ds

from bench._common import Row, command_for, parse_args, row, write_results
from bench.fleet_device import Device, Load, Tally, appliance
from bench.fleet_instances import provision, serve, transactions
from cloud_ingest.settings import IngestSettings
from cloud_ingest.storage import Storage, open_storage
from sync.protocol import Stream
from sync.protocol.parquet import STREAM_SCHEMAS
from tests.support.postgres import PostgresServer, running_postgres
from tests.support.seaweed import SeaweedS3, running_seaweed

__all__ = ["Load", "RunResult", "main", "rows_for", "run_fleet", "run_once", "run_sqlite_anchor"]

NAME = "fleet"
BUCKET = "fleet-bench"


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
    devices = asyncio.run(provision(settings[0], load, work))
    storage = open_storage(settings[0])
    tally = Tally()
    catalog = settings[0].catalog
    transactions_before = asyncio.run(transactions(catalog)) if catalog else 0
    with serve([s.data_dir for s in settings], extra, env) as instances:
        cpu_before = instances.cpu_s()

        async def fleet() -> float:
            started = time.monotonic()
            drain = asyncio.gather(
                *(
                    appliance(d, instances.bases, load, tally, work, seed=n)
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
        db_transactions = asyncio.run(transactions(catalog)) - transactions_before
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
