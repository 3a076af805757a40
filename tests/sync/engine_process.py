"""Run a sync engine in its own process (for SIGKILL tests and benchmarks).

``python -m tests.sync.engine_process --outbox DIR --state FILE --url URL --token T
[--blobs DIR]``: opens the outbox, runs the engine until killed or SIGTERM.
Prints ``ready`` once started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from sync.engine import SyncEngine
from sync.outbox import Outbox
from sync.settings import LinkSettings, OutboxSettings, SyncSettings
from tests.sync.ingest_server import DEVICE, SITE, BlobDir


async def run(args: argparse.Namespace) -> None:
    outbox = Outbox.open(args.outbox, OutboxSettings(min_free_disk_bytes=0))
    settings = SyncSettings(
        cloud_url=args.url,
        token=args.token,
        batch_max_records=args.batch_records,
        batch_max_age_s=0.0,
        chunk_min_bytes=16 << 10,
        chunk_target_s=0.5,
        handshake_interval_s=2.0,
        link=LinkSettings(backoff_initial_s=0.05, backoff_max_s=0.5, request_timeout_s=5),
    )
    engine = SyncEngine(
        outbox,
        settings,
        device_id=DEVICE,
        site_id=SITE,
        blob_source=BlobDir(Path(args.blobs)),
        state_path=Path(args.state),
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await engine.start()
    print("ready", flush=True)
    try:
        await stop.wait()
    finally:
        await engine.close()
        await outbox.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--outbox", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--blobs", default="/nonexistent")
    parser.add_argument("--batch-records", type=int, default=100)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
