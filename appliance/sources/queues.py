"""Bounded per-camera frame queues: when a camera outruns inference, the oldest frame goes.

A yard camera's newest frame matters most, so a full queue drops its oldest
frame (counted per camera) instead of blocking the pusher.  Consumers take
frames round-robin across cameras so one busy camera cannot starve the others.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable

from appliance.sources.frames import Frame

__all__ = ["CameraQueues"]


class CameraQueues:
    """One ``deque(maxlen=bound)`` per camera plus a wake-up event for consumers."""

    def __init__(self, bound: int, on_drop: Callable[[Frame], None] | None = None) -> None:
        if bound < 1:
            raise ValueError(f"queue bound must be >= 1, got {bound}")
        self._bound = bound
        self._queues: dict[str, deque[Frame]] = {}
        self._order: deque[str] = deque()
        self._ready = asyncio.Event()  # set while some frame may be waiting
        self._on_drop = on_drop
        self.dropped: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()

    def put_nowait(self, frame: Frame) -> Frame | None:
        """Queue ``frame``; returns the dropped oldest frame when the camera's queue was full."""
        queue = self._queues.get(frame.camera_id)
        if queue is None:
            queue = self._queues[frame.camera_id] = deque()
            self._order.append(frame.camera_id)
        dropped = None
        if len(queue) >= self._bound:
            dropped = queue.popleft()
            self.dropped[frame.camera_id] += 1
            if self._on_drop is not None:
                self._on_drop(dropped)
        queue.append(frame)
        self.accepted[frame.camera_id] += 1
        self._ready.set()
        return dropped

    async def put(self, frame: Frame) -> Frame | None:
        """Queue and wake the consumers (never blocks: a full queue drops its oldest)."""
        return self.put_nowait(frame)

    def get_nowait(self) -> Frame | None:
        """The next frame, round-robin across cameras, or None when all are empty."""
        for _ in range(len(self._order)):
            camera_id = self._order[0]
            self._order.rotate(-1)
            queue = self._queues[camera_id]
            if queue:
                return queue.popleft()
        return None

    async def get(self) -> Frame:
        """Wait for the next frame."""
        while True:
            frame = self.get_nowait()
            if frame is not None:
                return frame
            self._ready.clear()
            await self._ready.wait()

    def room(self, camera_id: str) -> int:
        """How many frames ``camera_id``'s queue takes before it drops its oldest."""
        queue = self._queues.get(camera_id)
        return self._bound - (len(queue) if queue is not None else 0)

    def depths(self) -> dict[str, int]:
        return {camera: len(queue) for camera, queue in self._queues.items()}

    def total_depth(self) -> int:
        return sum(len(queue) for queue in self._queues.values())
