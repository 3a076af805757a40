"""Tus servers for ``bench/ingest.py``, each run in its own process.

* ours, as deployed: ``yardlink ingest serve --port 0`` in its own process (its
  own event loop, every middleware, bearer tokens checked against the SQLite
  catalog, catalog rows written when an upload completes), with one device
  provisioned by ``add_device`` before it starts (``start_deployed_server``);
* the anchor: ``@tus/server`` + ``@tus/file-store`` on Node.js, installed with
  npm into ``~/.cache/yardlink/bench-node`` (outside the repo) on first use,
  unmodified; with ``fsync=True`` (an informational variant, not the goal's
  anchor) its file store fsyncs the data file after each PATCH's write, before
  the 204, as ours does.  Neither variant checks ``Upload-Checksum``
  (@tus/server 2.x has no checksum extension).

An anchor that cannot run (node or npm missing, node too old, the npm install
failing, the server exiting) raises ``AnchorUnavailable``: the benchmark stops
with that reason rather than writing rows without their anchor.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cloud_ingest.catalog_sqlite import SqliteCatalog
from cloud_ingest.provisioning import add_device
from yardlink.localstack import StackError, free_port, wait_port

__all__ = [
    "DEVICE_ID",
    "SITE_ID",
    "AnchorUnavailable",
    "RunningServer",
    "node_anchor_problem",
    "provision_device",
    "start_deployed_server",
    "start_node_server",
]

NODE_DIR = Path.home() / ".cache" / "yardlink" / "bench-node"
NODE_PACKAGES = ("@tus/server@2.4.5", "@tus/file-store@2.1.1")
NODE_MIN_VERSION = (20, 19)  # what those packages run on
_NODE_SERVER = """
import http from "node:http";
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";
import fs from "node:fs/promises";
const [dir, port, mode] = process.argv.slice(2);
class FsyncFileStore extends FileStore {
  async write(readable, id, offset) {
    const end = await super.write(readable, id, offset);
    const file = await fs.open(this.resolve(id), "r+");
    try { await file.sync(); } finally { await file.close(); }
    return end;
  }
}
const Store = mode === "fsync" ? FsyncFileStore : FileStore;
const tus = new Server({ path: "/v1/uploads", datastore: new Store({ directory: dir }) });
http.createServer((req, res) => tus.handle(req, res)).listen(Number(port), "127.0.0.1");
"""
DEVICE_ID, SITE_ID = "bench-01", "yard-a"
_START_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A server process, its port and the bearer token a device uses with it."""

    process: subprocess.Popen[bytes]
    port: int
    token: str = "bench"  # the node anchor takes any

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def provision_device(data_dir: Path) -> str:
    """Create the service's catalog with one device (as an operator would); its token."""
    catalog = await SqliteCatalog.open(data_dir / "catalog.db")
    try:
        created = await add_device(catalog, DEVICE_ID, SITE_ID, actor="bench", now=time.time())
    finally:
        await catalog.close()
    return created.token


def start_deployed_server(data_dir: Path) -> RunningServer:
    """``yardlink ingest serve`` on a free port, with a provisioned device.

    Its JSON log goes to ``data_dir/../server.log``; the port is read from the
    ``listening`` line.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    token = asyncio.run(provision_device(data_dir))
    yardlink = str(Path(sys.executable).parent / "yardlink")
    log_path = data_dir.parent / f"{data_dir.name}-server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [yardlink, "ingest", "serve", "--data-dir", str(data_dir), "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        for line in log_path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a line still being written, or not JSON
                continue
            if isinstance(entry, dict) and entry.get("msg") == "listening":
                return RunningServer(process, int(entry["port"]), token)
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError(f"yardlink ingest serve did not start: {log_path.read_text()[-500:]}")


class AnchorUnavailable(RuntimeError):
    """The reference server cannot run here; the message says why and what to install."""


def _node_version(node: str) -> tuple[int, ...] | None:
    done = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    try:
        return tuple(int(part) for part in done.stdout.strip().lstrip("v").split(".")[:2])
    except ValueError:
        return None


def node_anchor_problem() -> str | None:
    """Why the node anchor cannot run here (None: node and npm are there and new enough)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(n for n, p in (("node", node), ("npm", npm)) if p is None)
        return (
            f"{missing} not found on PATH: the @tus/server anchor needs Node.js >= "
            f"{'.'.join(map(str, NODE_MIN_VERSION))} with npm (Debian: apt-get install nodejs npm)"
        )
    version = _node_version(node)
    if version is None or version < NODE_MIN_VERSION:
        shown = "unknown" if version is None else ".".join(map(str, version))
        return (
            f"node {shown} at {node} is older than the "
            f"{'.'.join(map(str, NODE_MIN_VERSION))} that {' and '.join(NODE_PACKAGES)} need"
        )
    return None


def start_node_server(data_dir: Path, *, fsync: bool = False) -> RunningServer:
    """The reference server (``AnchorUnavailable`` when it cannot run).

    ``fsync``: the informational variant that fsyncs each PATCH's data before the 204.
    """
    problem = node_anchor_problem()
    if problem is not None:
        raise AnchorUnavailable(problem)
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node is not None and npm is not None  # checked just above
    if not (NODE_DIR / "node_modules" / "@tus" / "file-store").is_dir():
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        (NODE_DIR / "package.json").write_text('{"name": "yardlink-bench-node", "private": true}')
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", *NODE_PACKAGES],
            cwd=NODE_DIR,
            check=False,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-3:]
            raise AnchorUnavailable(
                f"npm install of {' '.join(NODE_PACKAGES)} in {NODE_DIR} failed "
                f"(exit {done.returncode}): {' / '.join(tail)}"
            )
    script = NODE_DIR / "server.mjs"
    script.write_text(_NODE_SERVER)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    mode = "fsync" if fsync else "plain"
    proc = subprocess.Popen([node, str(script), str(data_dir), str(port), mode], cwd=NODE_DIR)
    try:
        wait_port(port, proc)
    except StackError as exc:
        proc.kill()
        proc.wait()
        raise AnchorUnavailable(f"the @tus/server anchor did not start: {exc}") from exc
    return RunningServer(proc, port)
