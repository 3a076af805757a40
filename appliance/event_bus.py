"""The appliance's in-process event bus: one event per task result once it is durable.

Listeners are called inline on ``publish`` (keep them quick: the sync engine's
wake-up, the latency histogram).  Subscribers (``GET /v1/events``, the TUI's live
view) each get a bounded queue; a subscriber that falls behind loses its oldest
events, never blocks the pipeline and never holds memory without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["Event", "EventBus"]

Event = dict[str, Any]  # an events record as stored, with its seq and durable latency

SUBSCRIBER_QUEUE_BOUND = 256  # events held for a subscriber; the oldest go first


class EventBus:
    def __init__(self, queue_bound: int = SUBSCRIBER_QUEUE_BOUND) -> None:
        self._queue_bound = queue_bound
        self._listeners: list[Callable[[Event], None]] = []
        self._subscribers: set[asyncio.Queue[Event]] = set()

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener(event)`` on every publish, in the publisher's call."""
        self._listeners.append(listener)

    def publish(self, event: Event) -> None:
        for listener in self._listeners:
            listener(event)
        for queue in list(self._subscribers):
            if queue.full():
                queue.get_nowait()  # overflow: the subscriber loses its oldest event
            queue.put_nowait(event)

    def subscribe(self) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=self._queue_bound)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
