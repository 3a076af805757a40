"""A background task that fails is restarted with an exponential backoff (capped, reset after
a healthy run), and its state and last error are shown in ``GET /v1/status``.  The clock and
the sleep are fakes: nothing here waits for real time."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest

from appliance.daemon import Daemon
from appliance.supervisor import RestartBackoff, Supervisor
from tests.appliance.daemon_harness import TOKEN, base_url, site_config


class FakeTime:
    """A monotonic clock that moves only when the supervisor sleeps (or a task says so).

    The sleep records each delay; the ``park_after``-th sleep blocks until cancelled, so a
    test can look at the supervisor in a known state."""

    def __init__(self, park_after: int) -> None:
        self.now = 1000.0
        self.delays: list[float] = []
        self.parked = asyncio.Event()
        self._park_after = park_after

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        if len(self.delays) >= self._park_after:
            self.parked.set()
            await asyncio.Event().wait()  # until the supervisor is stopped
        self.now += seconds


async def test_a_task_failing_at_once_backs_off_exponentially_up_to_the_cap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeTime(park_after=9)
    supervisor = Supervisor(RestartBackoff(), clock=fake.clock, sleep=fake.sleep)
    starts = 0

    async def spool_gone() -> None:
        nonlocal starts
        starts += 1
        raise RuntimeError("spool directory /srv/spool is gone")

    with caplog.at_level(logging.ERROR, logger="appliance.supervisor"):
        supervisor.start("spool", spool_gone)
        try:
            await asyncio.wait_for(fake.parked.wait(), 10)
            status = supervisor.status()["spool"]
        finally:
            await supervisor.stop()
    assert fake.delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert starts == 9
    assert status == {
        "state": "backing_off",
        "restarts": 8,
        "failures": 9,
        "consecutive_failures": 9,
        "last_error": "RuntimeError: spool directory /srv/spool is gone",
        "last_failure_at": status["last_failure_at"],
        "restart_in_s": 60.0,
    }
    assert isinstance(status["last_failure_at"], float)
    failures = [r for r in caplog.records if getattr(r, "task", None) == "spool"]
    assert len(failures) == 9  # one line per failure, not a flood
    assert failures[0].exc_info is not None  # the first of a series with its traceback
    assert all(r.exc_info is None for r in failures[1:])
    assert "restarting in 60.0 s" in failures[-1].getMessage()


async def test_the_backoff_starts_again_after_the_task_ran_well_for_a_while() -> None:
    fake = FakeTime(park_after=6)
    backoff = RestartBackoff(initial_s=1.0, max_s=60.0, healthy_after_s=300.0)
    supervisor = Supervisor(backoff, clock=fake.clock, sleep=fake.sleep)
    starts = 0

    async def flaky() -> None:
        nonlocal starts
        starts += 1
        if starts == 4:
            fake.now += 300.0  # this run went well for five minutes, then failed
        raise OSError("telemetry append failed")

    supervisor.start("telemetry", flaky)
    try:
        await asyncio.wait_for(fake.parked.wait(), 10)
        status = supervisor.status()["telemetry"]
    finally:
        await supervisor.stop()
    assert fake.delays == [1.0, 2.0, 4.0, 1.0, 2.0, 4.0]
    assert status["consecutive_failures"] == 3 and status["failures"] == 6


async def test_a_task_that_returns_is_not_restarted() -> None:
    fake = FakeTime(park_after=1)
    supervisor = Supervisor(clock=fake.clock, sleep=fake.sleep)

    async def done() -> None:
        return None

    await supervisor.start("once", done)
    await supervisor.stop()
    assert fake.delays == []
    assert supervisor.status()["once"]["state"] == "finished"
    assert supervisor.status()["once"]["restarts"] == 0


async def test_a_failing_background_task_is_shown_in_v1_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def retention_broken(self: Daemon) -> None:
        raise PermissionError("blob-keys: permission denied")

    monkeypatch.setattr(Daemon, "_retention_loop", retention_broken)
    fake = FakeTime(park_after=3)
    config = site_config(
        tmp_path,
        inference={"gate_ocr": {"enabled": False}, "face_anonymize": {"enabled": False}},
    )
    daemon = Daemon(config, supervisor=Supervisor(clock=fake.clock, sleep=fake.sleep))
    await daemon.start()
    try:
        await asyncio.wait_for(fake.parked.wait(), 10)
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{base_url(daemon)}/v1/status", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as resp,
        ):
            status = await resp.json()
    finally:
        await daemon.stop()
    retention = status["supervised"]["retention"]
    assert retention["state"] == "backing_off"
    assert retention["restarts"] == 2 and retention["restart_in_s"] == 4.0
    assert retention["last_error"] == "PermissionError: blob-keys: permission denied"
    assert status["supervised"]["telemetry"]["state"] == "running"
    assert fake.delays == [1.0, 2.0, 4.0]
