"""A real daemon with model updates configured, and a camera pushing frames to it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from appliance.daemon import Daemon
from appliance.sources.synthetic import SyntheticYardCamera
from sync.shared.signing import Envelope
from tests.appliance.daemon_harness import TOKEN, site_config
from tests.support.releases import DEVICE_CLASS, ReleaseKit

HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/jpeg"}


def updates_config(tmp_path: Path, kit: ReleaseKit, **shadow: Any) -> Any:
    keyring = tmp_path / "keyring.json"
    keyring.write_bytes(Envelope.sign(kit.keyring.signed_document(), [kit.key]).to_bytes())
    return site_config(
        tmp_path,
        inference={"face_anonymize": {"enabled": False}, "gate_ocr": {"sla_p99_ms": 30_000}},
        updates={
            "keyring_file": str(keyring),
            "device_class": DEVICE_CLASS,
            "golden_latency_runs": 1,
            "shadow_frames": 3,
            "shadow_min_frames": 1,
            **shadow,
        },
    )


class Pusher:
    """Pushes synthetic gate frames one after another, the next once the queue is empty
    (a full queue drops frames by design, and a queue that never empties holds the
    shadow window back until its time limit; neither is what these tests are about)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.accepted = 0
        self.stop = asyncio.Event()
        self.camera = SyntheticYardCamera(seed=5)

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while not self.stop.is_set():
                url = f"{self.daemon.api_url}/v1/frames?camera=gate-in"
                data = self.camera.frame(self.accepted % 20).encode()
                async with session.post(url, data=data, headers=HEADERS) as response:
                    # 202: queued; 201: durable in the push spool first (either is taken)
                    assert response.status in (201, 202), await response.text()
                self.accepted += 1
                await asyncio.sleep(0.05)
                while self.pending() > 0 and not self.stop.is_set():
                    await asyncio.sleep(0.05)

    def pending(self) -> int:
        """Frames taken but not yet through the pipeline."""
        return self.accepted - self.processed()

    def processed(self) -> int:
        return int(sum(self.daemon.telemetry.frames.values()))
