"""``GET /healthz`` and ``daemon.readiness``: ready only when every enabled task's model is
loaded and the outbox is open; otherwise not ready, saying which model file is missing.
No token is needed and nothing sensitive is in the answer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aiohttp

from appliance.daemon import Daemon
from appliance.readiness import ReadinessState
from tests.appliance.daemon_harness import REPO, TOKEN, base_url, site_config
from tests.appliance.spool_harness import QuickTask, fixed_tasks

AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_ready_with_its_models_loaded_and_healthz_needs_no_token(tmp_path: Path) -> None:
    seen: list[ReadinessState] = []
    daemon = Daemon(site_config(tmp_path), task_loader=fixed_tasks(QuickTask("gate_ocr")))
    daemon.readiness.on_change(seen.append)  # the hook a service manager's notifier uses
    assert not daemon.readiness.ready and daemon.readiness.reason == "starting"
    await daemon.start()
    try:
        assert daemon.readiness.ready and daemon.readiness.reason is None
        await daemon.readiness.wait_ready()
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                async with http.get(f"{base_url(daemon)}/healthz", headers=headers) as resp:
                    assert resp.status == 200
                    assert await resp.json() == {"status": "ok", "ready": True}
            async with http.get(f"{base_url(daemon)}/v1/status", headers=AUTH) as resp:
                readiness = (await resp.json())["readiness"]
            async with http.get(f"{base_url(daemon)}/v1/status") as resp:
                assert resp.status == 401  # only /healthz is public
    finally:
        await daemon.stop()
    assert readiness == {"ready": True, "reason": None}
    assert seen == [ReadinessState(True, None), ReadinessState(False, "stopping")]


async def test_a_missing_model_makes_the_appliance_not_ready_and_healthz_says_which(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "no-models"
    empty.mkdir()
    config = site_config(
        tmp_path, models_dir=str(empty), inference={"face_anonymize": {"enabled": False}}
    )
    daemon = Daemon(config)  # the product's tasks, loaded from an empty directory
    await daemon.start()
    try:
        assert daemon.tasks == {} and set(daemon.model_failures) == {"gate_ocr"}
        assert not daemon.readiness.ready
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{base_url(daemon)}/healthz") as resp,
        ):
            assert resp.status == 503
            body = await resp.json()
    finally:
        await daemon.stop()
    det, rec = empty / "ch_PP-OCRv4_det_infer.onnx", empty / "ch_PP-OCRv4_rec_infer.onnx"
    assert body == {
        "status": "unavailable",
        "ready": False,
        "reason": f"model gate_ocr missing: {det}, {rec}",
    }


def test_the_ready_line_says_not_ready_and_why_when_a_model_is_missing(tmp_path: Path) -> None:
    """``yardlink appliance run`` (relative models_dir, resolved against the working
    directory, as in an installed service started elsewhere): the first line on stdout
    no longer claims ready with zero models loaded."""
    var = tmp_path / "var"
    config = tmp_path / "site.toml"
    config.write_text(
        f"""
version = 1
models_dir = "models"
[site]
device_id = "gate-01"
site_id = "depot-test"
data_dir = "{var}"
[outbox]
path = "{var / "outbox"}"
[local_api]
port = 0
technician_token = "{TOKEN}"
[inference.gate_ocr]
enabled = false
[[sources.cameras]]
id = "gate-in"
""",
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "yardlink.cli", "appliance", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,  # no models/ here
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        process.terminate()
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    face = tmp_path / "models" / "face_detection_short_range.tflite"
    assert ready["ready"] is False
    assert ready["reason"] == f"model face_anonymize missing: {face}"
    assert ready["api"].startswith("http://127.0.0.1:")
