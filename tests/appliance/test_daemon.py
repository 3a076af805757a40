"""The real ``yardlink appliance run`` process drains queued frames into the outbox on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from appliance.sources.synthetic import SyntheticYardCamera
from tests.appliance.daemon_harness import TOKEN, read_events, write_gate_config

FRAMES = 6


async def test_sigterm_drains_queued_frames_and_exits_cleanly(tmp_path: Path) -> None:
    config = write_gate_config(tmp_path, push_mode="queued")
    process = subprocess.Popen(
        [sys.executable, "-m", "yardlink.cli", "appliance", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        api = ready["api"]
        camera = SyntheticYardCamera(9)
        for index in range(FRAMES):
            request = urllib.request.Request(
                f"{api}/v1/frames?camera=gate-in",
                data=camera.frame(index).encode(),
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/jpeg"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 202
        process.send_signal(signal.SIGTERM)  # most frames are still queued now
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    events = await read_events(tmp_path / "var" / "outbox")
    assert len(events) == 2 * FRAMES
