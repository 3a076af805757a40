"""Durable vs queued push: what the 201 (frame fsync'd into the spool) costs a camera.

A real ``Daemon`` (local API over loopback, real outbox, real spool) whose one task
is a no-op, so the figures are the intake's, not the models': 4 cameras push JPEG
frames of the synthetic yard camera as fast as they are answered.  The modes are
measured in interleaved rounds (durable, queued, durable, ...) on the same machine,
each in a fresh data directory.  Rows: answered frames/s and the p99 of the answer,
per mode; the durable rows have the queued ones as their anchor.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from appliance.config import parse_config
from appliance.daemon import Daemon
from appliance.inference.results import TaskResult
from appliance.sources.synthetic import SyntheticYardCamera
from bench._common import Row, command_for, parse_args, row, write_results

_TOKEN = "bench-push-token-0123456789abcdef"
_CAMERAS = ("cam-1", "cam-2", "cam-3", "cam-4")


class _NoOpTask:
    name = "gate_ocr"
    model_name = "no-op"
    model_version = "1"

    def run(self, image_bgr: np.ndarray[Any, Any]) -> TaskResult:
        return TaskResult(self.name, self.model_name, "1", [], 1.0)


def _config(root: Path, mode: str) -> Any:
    return parse_config(
        {
            "version": 1,
            "site": {"device_id": "bench-01", "site_id": "bench", "data_dir": str(root / "var")},
            "outbox": {"path": str(root / "var" / "outbox")},
            "local_api": {"port": 0, "technician_token": _TOKEN, "push_mode": mode},
            "sources": {"cameras": [{"id": c} for c in _CAMERAS], "queue_bound": 10_000},
            "telemetry": {"interval_s": 3600},
        },
        environ={},
    )


async def _round(mode: str, frames: list[bytes], per_camera: int) -> tuple[float, list[float]]:
    """Answered frames/s and every answer's latency (s) for one round of ``mode``."""
    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        daemon = Daemon(
            _config(Path(tmp), mode), task_loader=lambda *a: ({"gate_ocr": _NoOpTask()}, {})
        )
        await daemon.start()
        latencies: list[float] = []
        expected = 201 if mode == "durable" else 202
        try:
            headers = {"Authorization": f"Bearer {_TOKEN}", "Content-Type": "image/jpeg"}
            async with aiohttp.ClientSession(headers=headers) as http:

                async def camera(name: str) -> None:
                    for index in range(per_camera):
                        body = frames[index % len(frames)]
                        started = time.perf_counter()
                        url = f"{daemon.api_url}/v1/frames?camera={name}"
                        async with http.post(url, data=body) as answer:
                            await answer.read()
                            if answer.status != expected:
                                raise RuntimeError(f"{mode}: answered {answer.status}")
                        latencies.append(time.perf_counter() - started)

                began = time.perf_counter()
                await asyncio.gather(*(camera(name) for name in _CAMERAS))
                elapsed = time.perf_counter() - began
        finally:
            await daemon.stop()
        return len(latencies) / elapsed, latencies


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


async def main(argv: list[str] | None = None) -> None:
    args = parse_args("push", argv)
    rounds, per_camera = (1, 25) if args.quick else (3, 150)
    synthetic = SyntheticYardCamera(3)
    frames = [synthetic.frame(index).encode() for index in range(8)]
    rates: dict[str, list[float]] = {"durable": [], "queued": []}
    answers: dict[str, list[float]] = {"durable": [], "queued": []}
    for _ in range(rounds):
        for mode in ("durable", "queued"):  # interleaved A/B
            rate, latencies = await _round(mode, frames, per_camera)
            rates[mode].append(rate)
            answers[mode] += latencies
    command = command_for("push", args.quick)
    queued_rate = statistics.median(rates["queued"])
    queued_p99 = _p99(answers["queued"]) * 1000
    rows: list[Row] = [
        row("push_queued_frames_per_s", queued_rate, "frames/s", goal="reference", command=command),
        row("push_queued_answer_p99", queued_p99, "ms", goal="reference", command=command),
        row(
            "push_durable_frames_per_s",
            statistics.median(rates["durable"]),
            "frames/s",
            anchor="push_queued_frames_per_s",
            anchor_value=round(queued_rate, 4),
            goal=">= 0.8x queued (the fsync costs at most a fifth of the intake)",
            command=command,
            met=statistics.median(rates["durable"]) >= 0.8 * queued_rate,
        ),
        row(
            "push_durable_answer_p99",
            _p99(answers["durable"]) * 1000,
            "ms",
            anchor="push_queued_answer_p99",
            anchor_value=round(queued_p99, 4),
            goal="<= 1.5x queued",
            command=command,
            met=_p99(answers["durable"]) * 1000 <= 1.5 * queued_p99,
        ),
    ]
    write_results("push", rows, args.out)


if __name__ == "__main__":
    asyncio.run(main())
