"""What the technician's TUI costs the appliance: the daemon's CPU while the real TUI
polls /v1/status every second and follows /v1/events (issue 18, goal < 2 % of a core).

The daemon runs as a real child process (``yardlink appliance run``, no models, no
cloud: nothing else to do, so its idle CPU is the anchor).  Windows alternate: idle,
then the real ``YardlinkTui`` (headless, in this process) polling; each window reads
the child's CPU time (user + system) before and after.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil

from appliance.tui.app import YardlinkTui
from appliance.tui.client import ApplianceClient
from bench._common import command_for, parse_args, row, write_results

TOKEN = "bench-technician-token-5f2a9c7e1b3d4"
SITE = """version = 1
models_dir = "models"
[site]
device_id = "bench-01"
site_id = "bench-site"
data_dir = "{data}"
[outbox]
path = "{data}/outbox"
[local_api]
port = 0
technician_token = "{token}"
[sources]
cameras = [{{id = "gate-in"}}]
[inference.gate_ocr]
enabled = false
[inference.face_anonymize]
enabled = false
"""


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def _window(process: psutil.Process, seconds: float, url: str | None) -> tuple[float, float]:
    """CPU seconds per second over one window (with the TUI polling when url): the
    daemon's, and this process's (the headless TUI itself)."""
    me = psutil.Process()
    if url is None:
        before = _cpu_s(process)
        await asyncio.sleep(seconds)
        return (_cpu_s(process) - before) / seconds, 0.0
    app = YardlinkTui(ApplianceClient(url, TOKEN), poll_s=1.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(1.0)  # connected and first status shown
        polls, before, mine = app.polls, _cpu_s(process), _cpu_s(me)
        await asyncio.sleep(seconds)
        used, own = _cpu_s(process) - before, _cpu_s(me) - mine
        assert app.polls - polls >= seconds * 0.8, "the TUI did not poll once a second"
    return used / seconds, own / seconds


async def main(argv: list[str] | None = None) -> None:
    args = parse_args("tui_polling", argv)
    rounds, seconds = (2, 10.0) if args.quick else (3, 30.0)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site.toml"
        site.write_text(SITE.format(data=f"{tmp}/var", token=TOKEN))
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "yardlink.cli", "--log-level", "WARNING", "appliance", "run",
            "--config", str(site), stdout=asyncio.subprocess.PIPE, env={**os.environ},
        )  # fmt: skip
        try:
            assert child.stdout is not None
            ready = json.loads(await asyncio.wait_for(child.stdout.readline(), timeout=60))
            url, process = ready["api"], psutil.Process(child.pid)
            await asyncio.sleep(2.0)  # past the start's work
            idle, polled, tui = [], [], []
            for _ in range(rounds):
                idle.append((await _window(process, seconds, None))[0])
                daemon_cpu, tui_cpu = await _window(process, seconds, url)
                polled.append(daemon_cpu)
                tui.append(tui_cpu)
        finally:
            child.terminate()
            await child.wait()
    idle_pct = 100 * sum(idle) / rounds
    polled_pct = 100 * sum(polled) / rounds
    cost = max(0.0, polled_pct - idle_pct)
    tui_pct = 100 * sum(tui) / rounds
    command = command_for("tui_polling", args.quick)
    print(f"idle windows {[round(100 * v, 2) for v in idle]} % of a core")
    print(f"polled windows {[round(100 * v, 2) for v in polled]} % of a core")
    print(f"TUI process {[round(100 * v, 2) for v in tui]} % of a core")
    write_results(
        "tui_polling",
        [
            row(
                "daemon CPU while the TUI polls (1 s) and follows events",
                polled_pct,
                "% core",
                anchor="idle daemon",
                anchor_value=idle_pct,
                goal="TUI's share < 2 % of a core",
                command=command,
            ),
            row(
                "TUI's share of the daemon's CPU (polled - idle, mean of the windows)",
                cost,
                "% core",
                goal="< 2 % of a core",
                command=command,
                met=cost < 2.0,
            ),
            row(
                "the TUI process itself (headless, when it runs on the gateway)",
                tui_pct,
                "% core",
                goal="informative",
                command=command,
            ),
        ],
        args.out,
    )
    print(f"TUI polling costs the daemon {cost:.2f} % of a core ({time.strftime('%H:%M')})")


if __name__ == "__main__":
    asyncio.run(main())
