"""The real ingest service in its own process, with raw uploads even before it has tus.

``python -m tests.sync.ingest_process --data-dir D --port P``: like ``yardlink ingest
serve``, plus aiohttp-tus mounted at ``/v1/uploads/`` (files under ``D/tus``) when
``cloud_ingest.tus`` does not exist yet.  Used by ``bench/sync.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

from aiohttp import web

from cloud_ingest.app import build_app
from cloud_ingest.middleware import IngestAppRunner
from cloud_ingest.settings import IngestSettings
from tests.sync.tus_servers import raw_uploads_for


async def serve(data_dir: Path, port: int) -> None:
    settings = IngestSettings(data_dir=data_dir, port=port)
    app = build_app(settings)
    raw_uploads_for(data_dir / "tus")(app)
    runner = IngestAppRunner(app, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.data_dir, args.port))


if __name__ == "__main__":
    main()
