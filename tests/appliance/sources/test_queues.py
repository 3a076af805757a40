from __future__ import annotations

import asyncio

import numpy as np

from appliance.sources.frames import Frame
from appliance.sources.queues import CameraQueues


def _frame(camera: str, n: int) -> Frame:
    return Frame(camera, b"", "image/jpeg", np.zeros((1, 1, 3), np.uint8), metadata={"n": n})


async def test_full_queue_drops_oldest_and_counts() -> None:
    dropped: list[int] = []
    queues = CameraQueues(3, on_drop=lambda f: dropped.append(f.metadata["n"]))
    for n in range(5):
        await queues.put(_frame("a", n))
    assert queues.dropped["a"] == 2 and dropped == [0, 1]
    assert queues.depths() == {"a": 3}
    assert [(await queues.get()).metadata["n"] for _ in range(3)] == [2, 3, 4]


async def test_cameras_are_served_round_robin() -> None:
    queues = CameraQueues(10)
    for n in range(3):
        queues.put_nowait(_frame("busy", n))
    queues.put_nowait(_frame("quiet", 0))
    order = [(await queues.get()).camera_id for _ in range(4)]
    assert order[:2] in (["busy", "quiet"], ["quiet", "busy"])
    assert queues.dropped == {}


async def test_put_nowait_wakes_a_waiting_consumer() -> None:
    queues = CameraQueues(2)
    waiting = asyncio.create_task(queues.get())
    await asyncio.sleep(0)
    queues.put_nowait(_frame("a", 7))
    frame = await asyncio.wait_for(waiting, timeout=2)
    assert frame.metadata["n"] == 7
