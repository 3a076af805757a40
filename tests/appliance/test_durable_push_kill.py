"""A frame answered 201 survives a SIGKILL: the real ``yardlink appliance run`` process
(``push_mode = "durable"``, the default) is killed right after the last answer, started
again, and every pushed frame's events are in the outbox exactly once, with the
metadata it was pushed with."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

from appliance.sources.synthetic import SyntheticYardCamera
from tests.appliance.daemon_harness import TOKEN, read_events, write_gate_config

FRAMES = 6
TASKS_PER_FRAME = 2  # the repository's models: gate_ocr and face_anonymize


def _start(config: Path, cwd: Path) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "yardlink.cli", "appliance", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=cwd,
    )
    assert process.stdout is not None
    return process, str(json.loads(process.stdout.readline())["api"])


def _push(api: str, body: bytes, transaction: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"{api}/v1/frames?camera=gate-in",
        data=body,
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Content-Type": "image/jpeg",
            "X-Frame-Metadata": json.dumps({"transaction_id": transaction}),
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
        answer: dict[str, object] = json.loads(response.read())
        return answer


def _stop(process: subprocess.Popen[bytes], sig: signal.Signals) -> int:
    process.send_signal(sig)
    code = process.wait(timeout=60)
    if process.stdout is not None:
        process.stdout.close()
    return code


async def test_sigkill_after_201_loses_no_frame_and_stores_each_once(tmp_path: Path) -> None:
    config = write_gate_config(tmp_path)
    spool = tmp_path / "var" / "spool"
    camera = SyntheticYardCamera(9)
    bodies = [camera.frame(index).encode() for index in range(FRAMES)]
    process, api = _start(config, tmp_path)
    try:
        ids = [str(_push(api, body, f"t-{i}")["id"]) for i, body in enumerate(bodies)]
        assert _stop(process, signal.SIGKILL) == -signal.SIGKILL  # no drain, no goodbye
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert len(set(ids)) == FRAMES
    for name in ids:  # each answered frame is a whole file, in the spool or processed
        where = [spool / "gate-in" / name, spool / "processed" / "gate-in" / name]
        assert sum(path.exists() for path in where) == 1, name
    process, _ = _start(config, tmp_path)
    try:
        deadline = time.monotonic() + 90
        while (
            any((spool / "gate-in" / name).exists() for name in ids) and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert _stop(process, signal.SIGTERM) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert sorted(p.name for p in (spool / "processed" / "gate-in").glob("*.jpg")) == sorted(ids)
    events = await read_events(tmp_path / "var" / "outbox")
    per_transaction = Counter(
        json.loads(str(event["frame_metadata"]))["transaction_id"] for event in events
    )
    assert per_transaction == {f"t-{i}": TASKS_PER_FRAME for i in range(FRAMES)}
