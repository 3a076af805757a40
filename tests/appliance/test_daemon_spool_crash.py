"""kill -9 in the spool's crash window: a real daemon in a child process is killed with
SIGKILL right after the outbox committed a spool frame's records, before its file is
moved to processed/ (or right after the move, before the file's receipt is dropped).
A fresh daemon on the same data then reads the spool again: the frame's events are in
the outbox exactly once, the models do not run on the file again, and no receipt is
left behind."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from appliance.config import SiteConfig
from sync.outbox import Outbox
from tests.appliance.daemon_harness import REPO, wait_for
from tests.appliance.spool_harness import (
    FRAME,
    QuickTask,
    drop_frame,
    running,
    spool_config,
    stored_tasks,
)

TASKS = ("gate_ocr", "face_anonymize")

CHILD = r"""
import asyncio, os, signal, sys
from pathlib import Path

import appliance.daemon
import appliance.sources.spool as spool_module
from tests.appliance.test_daemon_spool_crash import crash_config, quick_tasks

tmp, moment = Path(sys.argv[1]), sys.argv[2]
real_rename = spool_module.rename_durably

def rename_then_maybe_die(source, target):
    if "processed" in target.parts:  # the outbox has committed the frame's records
        if moment == "after_move":
            real_rename(source, target)
        print("killed", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    real_rename(source, target)

spool_module.rename_durably = rename_then_maybe_die

async def main():
    daemon = appliance.daemon.Daemon(
        crash_config(tmp), task_loader=lambda *args: (quick_tasks(), {})
    )
    await daemon.start()
    await asyncio.sleep(90)  # killed long before
    print("not killed", flush=True)

asyncio.run(main())
"""


def quick_tasks() -> dict[str, QuickTask]:
    return {name: QuickTask(name) for name in TASKS}


def crash_config(tmp_path: Path) -> SiteConfig:
    return spool_config(tmp_path, tmp_path / "spool", retry_s=None)


async def _run_child_until_killed(tmp_path: Path, moment: str) -> None:
    drop_frame(tmp_path / "spool")
    child = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", CHILD, str(tmp_path), moment],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    assert child.stdout == "killed\n"


async def _restart_and_settle(tmp_path: Path) -> dict[str, QuickTask]:
    """A fresh daemon on the same data, until the file is moved and no receipt is left."""
    tasks = quick_tasks()
    async with running(crash_config(tmp_path), *tasks.values()) as daemon:
        outbox = daemon.outbox
        assert outbox is not None
        await wait_for(lambda: (tmp_path / "spool" / "processed" / "gate-in" / FRAME).exists())
        await wait_for(lambda: outbox.receipts() == {})
        await asyncio.sleep(0.3)  # thirty more scans: nothing read again
    return tasks


async def _receipts(outbox_path: Path) -> dict[bytes, int]:
    outbox = Outbox.open(outbox_path)
    try:
        return outbox.receipts()
    finally:
        await outbox.close()


async def test_killed_between_the_commit_and_the_move_the_frame_is_stored_once(
    tmp_path: Path,
) -> None:
    await _run_child_until_killed(tmp_path, "before_move")
    outbox_path = tmp_path / "var" / "outbox"
    assert (tmp_path / "spool" / "gate-in" / FRAME).exists()  # the crash window
    assert await stored_tasks(outbox_path) == dict.fromkeys(TASKS, 1)
    assert len(await _receipts(outbox_path)) == 1
    tasks = await _restart_and_settle(tmp_path)
    assert [task.runs for task in tasks.values()] == [0, 0]  # known stored: only moved
    assert await stored_tasks(outbox_path) == dict.fromkeys(TASKS, 1)
    assert not list((tmp_path / "spool" / "gate-in").iterdir())
    assert await _receipts(outbox_path) == {}


async def test_killed_between_the_move_and_the_receipts_drop_the_receipt_goes_at_start(
    tmp_path: Path,
) -> None:
    await _run_child_until_killed(tmp_path, "after_move")
    outbox_path = tmp_path / "var" / "outbox"
    assert (tmp_path / "spool" / "processed" / "gate-in" / FRAME).exists()
    assert len(await _receipts(outbox_path)) == 1  # its file is gone from the spool
    tasks = await _restart_and_settle(tmp_path)
    assert [task.runs for task in tasks.values()] == [0, 0]
    assert await stored_tasks(outbox_path) == dict.fromkeys(TASKS, 1)
    assert await _receipts(outbox_path) == {}
