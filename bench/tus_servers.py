"""Tus servers for ``bench/ingest.py``, each run in its own process.

* ours: ``python -m bench.tus_servers DATA_DIR PORT`` -- the real tus routes
  and error middleware with a bench-only auth middleware (every bearer token is
  device ``bench``);
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

import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from cloud_ingest.blobs import BlobStore
from cloud_ingest.middleware import error_middleware
from cloud_ingest.principal import PRINCIPAL, Principal
from cloud_ingest.tus import CompletedUpload, UploadStore, add_tus_routes
from yardlink.localstack import StackError, free_port, wait_port

__all__ = ["AnchorUnavailable", "node_anchor_problem", "start_node_server", "start_our_server"]

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
_BENCH_DEVICE = Principal(role="device", name="bench", device_id="bench", site_id="bench")


def start_our_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.tus_servers", str(data_dir), str(port)])
    wait_port(port, proc)
    return proc, port


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


def start_node_server(
    data_dir: Path, *, fsync: bool = False
) -> tuple[subprocess.Popen[bytes], int]:
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
    return proc, port


@web.middleware
async def _bench_auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request[PRINCIPAL] = _BENCH_DEVICE
    return await handler(request)


def _serve(data_dir: Path, port: int) -> None:
    app = web.Application(middlewares=[error_middleware, _bench_auth])

    async def on_complete(upload: CompletedUpload) -> None:
        del upload

    add_tus_routes(
        app, UploadStore(data_dir / "uploads"), BlobStore(data_dir / "blobs"), on_complete
    )
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), int(sys.argv[2]))
