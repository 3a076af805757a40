"""The data dir's lock and the standby claim, in one process (``flock`` locks belong to
an open file, so two ``DataDirLock`` objects exclude each other as two processes do)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from appliance.errors import ApplianceError
from appliance.handover import (
    STANDBY_STATUS,
    DataDirBusy,
    DataDirClaim,
    DataDirLock,
    StandbyAbandoned,
    StandbyRefused,
)


def test_one_holder_at_a_time_and_the_holder_is_named(tmp_path: Path) -> None:
    first, second = DataDirLock(tmp_path), DataDirLock(tmp_path)
    assert first.try_acquire() and first.held
    assert not second.try_acquire() and not second.held
    assert second.holder().isdigit()  # the pid the holder wrote
    first.release()
    assert second.try_acquire()
    second.release()


async def test_a_plain_start_on_a_held_data_dir_is_refused_with_why(tmp_path: Path) -> None:
    running = DataDirLock(tmp_path)
    assert running.try_acquire()
    claim = DataDirClaim(DataDirLock(tmp_path), standby=False, stop_requested=asyncio.Event())
    with pytest.raises(DataDirBusy, match="--standby") as caught:
        await claim(None)
    assert isinstance(caught.value, ApplianceError) and caught.value.retryable
    running.release()
    await claim(None)
    assert claim.lock.held
    claim.lock.release()


async def test_a_standby_waits_for_the_lock_and_takes_it_when_released(tmp_path: Path) -> None:
    running = DataDirLock(tmp_path)
    assert running.try_acquire()
    said: list[str] = []
    claim = DataDirClaim(
        DataDirLock(tmp_path),
        standby=True,
        stop_requested=asyncio.Event(),
        tell_status=said.append,
    )
    waiting = asyncio.create_task(claim(None))
    while not said:  # it says standby before it waits
        await asyncio.sleep(0.01)
    assert said == [STANDBY_STATUS]
    await asyncio.sleep(0.1)
    assert not waiting.done() and not claim.lock.held  # the running one still holds it
    running.release()  # the handover
    await asyncio.wait_for(waiting, 60)
    assert claim.lock.held
    claim.lock.release()


async def test_a_standby_whose_models_did_not_load_refuses_without_touching_the_lock(
    tmp_path: Path,
) -> None:
    running = DataDirLock(tmp_path)
    assert running.try_acquire()
    said: list[str] = []
    claim = DataDirClaim(
        DataDirLock(tmp_path),
        standby=True,
        stop_requested=asyncio.Event(),
        tell_status=said.append,
    )
    with pytest.raises(StandbyRefused, match="model gate_ocr missing"):
        await claim("model gate_ocr missing: /models/ocr.onnx")
    assert said == [] and running.held and not claim.lock.held
    running.release()


async def test_a_waiting_standby_can_be_called_off_or_gives_up(tmp_path: Path) -> None:
    running = DataDirLock(tmp_path)
    assert running.try_acquire()
    stop = asyncio.Event()
    claim = DataDirClaim(DataDirLock(tmp_path), standby=True, stop_requested=stop)
    waiting = asyncio.create_task(claim(None))
    await asyncio.sleep(0.05)
    stop.set()  # SIGTERM to the standby
    with pytest.raises(StandbyAbandoned):
        await asyncio.wait_for(waiting, 60)

    impatient = DataDirClaim(
        DataDirLock(tmp_path), standby=True, stop_requested=asyncio.Event(), wait_s=0.0
    )
    with pytest.raises(DataDirBusy, match="did not hand over"):
        await impatient(None)
    assert running.held
    running.release()
