"""The ingest side of the fleet benchmark: ``yardlink ingest serve`` processes on
loopback, the provisioned devices and the PostgreSQL transaction count."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psutil

from bench.fleet_device import Device, Load
from cloud_ingest.catalog_open import open_catalog
from cloud_ingest.provisioning import add_device
from cloud_ingest.settings import IngestSettings

__all__ = ["Instances", "provision", "serve", "transactions"]

_START_TIMEOUT_S = 120.0


@dataclass
class Instances:
    processes: list[subprocess.Popen[bytes]]
    bases: list[str]

    def cpu_s(self) -> list[float]:
        times = [psutil.Process(p.pid).cpu_times() for p in self.processes]
        return [t.user + t.system for t in times]


@contextmanager
def serve(data_dirs: list[Path], extra: list[str], env: Mapping[str, str]) -> Iterator[Instances]:
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


async def provision(settings: IngestSettings, load: Load, work: Path) -> list[Device]:
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


async def transactions(url: str) -> int:
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
