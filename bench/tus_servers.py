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
from yardlink.localstack import free_port, wait_port

__all__ = ["start_node_server", "start_our_server"]

NODE_DIR = Path.home() / ".cache" / "yardlink" / "bench-node"
NODE_PACKAGES = ("@tus/server@2.4.5", "@tus/file-store@2.1.1")  # run on node >= 20.19
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


def start_node_server(
    data_dir: Path, *, fsync: bool = False
) -> tuple[subprocess.Popen[bytes], int] | None:
    """The reference server, or None when node/npm are missing or install fails.

    ``fsync``: the informational variant that fsyncs each PATCH's data before the 204.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None
    if not (NODE_DIR / "node_modules" / "@tus" / "file-store").is_dir():
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        (NODE_DIR / "package.json").write_text('{"name": "yardlink-bench-node", "private": true}')
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", *NODE_PACKAGES],
            cwd=NODE_DIR,
            check=False,
            capture_output=True,
        )
        if done.returncode != 0:
            return None
    script = NODE_DIR / "server.mjs"
    script.write_text(_NODE_SERVER)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    mode = "fsync" if fsync else "plain"
    proc = subprocess.Popen([node, str(script), str(data_dir), str(port), mode], cwd=NODE_DIR)
    wait_port(port, proc)
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
