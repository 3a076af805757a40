"""docs/tui-dashboard.png: a screenshot of the REAL TUI over a real daemon (real models,
synthetic yard frames) syncing to the real ingest service on loopback, uploads
paused from the TUI so that the outbox shows what waits.

Textual exports the screen as SVG; ``rsvg-convert`` (Debian: librsvg2-bin) turns it
into the PNG.  Run: ``.venv/bin/python -m bench.tui_screenshot``.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from appliance.daemon import Daemon
from appliance.sources.frames import decode_frame
from appliance.sources.synthetic import SyntheticYardCamera
from appliance.tui.app import YardlinkTui
from appliance.tui.client import ApplianceClient
from tests.appliance.daemon_harness import TOKEN
from tests.appliance.tui.tui_harness import daemon_config
from tests.sync.ingest_server import running_ingest

DOCS = Path(__file__).resolve().parents[1] / "docs"
SIZE = (100, 30)


async def main() -> None:
    converter = shutil.which("rsvg-convert")
    if converter is None:
        sys.exit("rsvg-convert is missing: apt-get install librsvg2-bin")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        async with running_ingest(tmp_path / "cloud") as ingest:
            daemon = Daemon(daemon_config(tmp_path, ingest, models=True))
            await daemon.start()
            try:
                camera = SyntheticYardCamera(7)
                app = YardlinkTui(ApplianceClient(daemon.api_url, TOKEN), poll_s=0.5)
                async with app.run_test(size=SIZE) as pilot:
                    await pilot.pause(1.0)
                    await pilot.press("p", "y")  # uploads paused: the outbox holds the events
                    for frame in camera.frames(6):
                        data = frame.encode()
                        await daemon.queue_frame(
                            decode_frame("gate-in", data, None, max_bytes=1 << 24)
                        )
                    while daemon.telemetry.results.get("gate_ocr", 0) < 6:
                        await pilot.pause(0.2)
                    await pilot.pause(2.0)
                    svg = app.export_screenshot()
            finally:
                await daemon.stop()
    svg_path = tmp_path.with_suffix(".svg")
    svg_path.write_text(svg)
    out = DOCS / "tui-dashboard.png"
    subprocess.run([converter, "-w", "1200", str(svg_path), "-o", str(out)], check=True)
    svg_path.unlink()
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
