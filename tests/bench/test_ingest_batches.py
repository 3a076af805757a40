"""The batch ingest benchmark compares like with like: its anchor writes the bytes
the service stores, in as many files."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.ingest_batches import _batches, _fsync_writers_anchor, _send
from bench.tus_servers import start_deployed_server


def _contents(root: Path) -> list[bytes]:
    return sorted(p.read_bytes() for p in root.rglob("*.parquet") if p.is_file())


def test_the_anchor_writes_the_bytes_the_service_stores(tmp_path: Path) -> None:
    batches = _batches(3)
    _fsync_writers_anchor(batches, tmp_path / "anchor")
    server = start_deployed_server(tmp_path / "data")
    try:
        asyncio.run(_send(server.url, server.token, batches, expect=201))
    finally:
        server.process.terminate()
        server.process.wait(timeout=30)
    stored = _contents(tmp_path / "data" / "lake")
    assert len(stored) == len(batches)
    assert stored == _contents(tmp_path / "anchor") == sorted(body for _, body in batches)
