"""One real model update end to end: ``yardlink ingest serve`` and ``yardlink appliance run``
as processes with the link emulator between them; a new version of the OCR model is
published and rolled out with the operator's CLI, the appliance downloads, verifies,
validates, shadows and commits it, and the lake's records carry the new model_version."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from appliance.sources.synthetic import SyntheticYardCamera
from sync.linkemu import LinkConditions, LinkEmulator
from tests.support.e2e_site import appliance_site_toml
from tests.support.model_registry import Kit
from yardlink.localstack import (
    YARDLINK,
    ApplianceProcess,
    IngestProcess,
    StackError,
    lake_rows,
    wait_port,
)

TECHNICIAN = "technician-token-for-the-update-e2e-test-9fK2"
DEVICE, SITE, CAMERA = "gate-01", "wh-nyc-01", "cam-1"


class TrustingIngest(IngestProcess):
    """The ingest process with a trusted release keyring (publishing enabled)."""

    def __init__(self, data_dir: Path, keyring: Path) -> None:
        super().__init__(data_dir)
        self.keyring = keyring

    def start(self, timeout: float = 60.0) -> None:
        proc = self._spawn(
            [*YARDLINK, "ingest", "serve", "--data-dir", str(self.data_dir)]
            + ["--port", str(self.port), "--release-keyring", str(self.keyring)]
        )
        wait_port(self.port, proc, timeout)


def _cli(*args: str) -> str:
    done = subprocess.run(
        [*YARDLINK, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _site_toml(root: Path, cloud_url: str, token: str, keyring: Path) -> Path:
    return appliance_site_toml(
        root,
        cloud_url,
        token,
        device=DEVICE,
        site=SITE,
        camera=CAMERA,
        technician=TECHNICIAN,
        # a loaded test machine must not fail the release on latency: this test is
        # about the path from publish to serving, not the latency budget
        inference={"gate_ocr": {"sla_p99_ms": 30_000}},
        updates={
            "keyring_file": str(keyring),
            "device_class": "x86-cpu",
            "golden_latency_runs": 1,
            "shadow_frames": 3,
            "shadow_min_frames": 1,
            "shadow_max_s": 30.0,
        },
    )


async def _push(appliance: ApplianceProcess, stop: asyncio.Event) -> None:
    camera = SyntheticYardCamera(7, plate_probability=1.0, difficulty="clean")
    index = 0
    while not stop.is_set():
        jpeg = await asyncio.to_thread(lambda i=index: camera.frame(i).encode())
        index += 1
        try:
            answer = await asyncio.to_thread(appliance.push_frame, CAMERA, jpeg)
        except (StackError, OSError):
            await asyncio.sleep(0.2)
            continue
        await asyncio.sleep(0.5 if answer.get("queue_depth", 0) >= 2 else 0.2)


async def _wait(condition: Any, what: str, timeout: float, pusher: asyncio.Task[None]) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if pusher.done():
            pusher.result()  # raises what stopped the frames
            raise AssertionError("the frame pusher stopped")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.5)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_a_new_ocr_model_published_and_rolled_out_serves_on_the_appliance(
    tmp_path: Path, kit: Kit
) -> None:
    ingest = TrustingIngest(tmp_path / "cloud", kit.keyring_file)
    token = ingest.add_device(DEVICE, SITE)
    await asyncio.to_thread(ingest.start)
    manifest = tmp_path / "release.manifest.json"
    manifest.write_bytes(kit.signed)
    version = kit.manifest.version
    stop = asyncio.Event()
    appliance: ApplianceProcess | None = None
    pusher: asyncio.Task[None] | None = None
    try:
        conditions = LinkConditions(rtt_s=0.150, rate_bps=16_000_000)
        async with LinkEmulator(("127.0.0.1", ingest.port), conditions) as link:
            appliance = ApplianceProcess(
                _site_toml(tmp_path, link.url, token, kit.keyring_file), TECHNICIAN
            )
            await asyncio.to_thread(appliance.start)
            pusher = asyncio.create_task(_push(appliance, stop))
            data = str(ingest.data_dir)
            published = _cli(
                "ingest",
                "models",
                "publish",
                str(kit.build.archive),
                "--manifest",
                str(manifest),
                "--keyring",
                str(kit.keyring_file),
                "--data-dir",
                data,
            )
            assert published.startswith("published gate-ocr")
            _cli("ingest", "models", "rollout", "start", "gate-ocr", version, "--data-dir", data)

            def committed() -> bool:
                assert appliance is not None
                task = appliance.get("/v1/models")["gate_ocr"]
                return bool(task["model_version"] == version and not task["on_trial"])

            await _wait(committed, "the new release to be committed", 240, pusher)

            def in_lake() -> bool:
                rows = lake_rows(ingest.data_dir)
                return any(r["model_version"] == version for r in rows)

            await _wait(in_lake, "lake records of the new model version", 60, pusher)

            def reported() -> bool:  # the outcome rides the next handshake, not the batches
                status = _cli(
                    "ingest", "models", "rollout", "status", "gate-ocr", version, "--data-dir", data
                )
                return "0 committed" not in status

            await _wait(reported, "the device's committed outcome at the cloud", 120, pusher)
            stop.set()
            await pusher
        rows = lake_rows(ingest.data_dir)
        ocr = [r for r in rows if r["task"] == "gate_ocr"]
        first_new = min(r["seq"] for r in ocr if r["model_version"] == version)
        assert all(r["model_version"] == version for r in ocr if r["seq"] > first_new)
        status = _cli(
            "ingest", "models", "rollout", "status", "gate-ocr", version, "--data-dir", data
        )
        assert "1 committed, 0 failed" in status
    finally:
        stop.set()
        if pusher is not None:
            await asyncio.gather(pusher, return_exceptions=True)
        if appliance is not None:
            await asyncio.to_thread(appliance.stop)
        await asyncio.to_thread(ingest.stop)
