"""What goes beside raw uploads, without cutting the chunks on the wire short: a
handshake that falls due (it may queue raw requests, which then go before
``raw_sampled``) and a metadata send when events arrive, each its own task.

Each upload asks :meth:`BesideRaw.goes_on` before a request with blob bytes.  While
a metadata send is under way no upload starts a chunk until the send's PUT bodies
are handed to the socket (``bodies_sent``): the link is one queue, so the chunk's
bytes then go behind the events; the PUT's answer is not awaited, which would idle
the link for a round trip per burst.  A side task that fails stops the uploads at
their next chunk and fails the step (:meth:`BesideRaw.around`).

A side task starts in a context of its own: it is started from an upload's chunk
boundary, and the bytes an upload sent are counted by a tally that follows its
context (:func:`sync.cloud_client.counting_sent`), so events and handshakes would
otherwise count as that blob's (resent) bytes.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

from sync.handshake import Handshakes
from sync.protocol import Stream

__all__ = ["SIDE_POLL_S", "BesideRaw"]

SIDE_POLL_S: Final = 0.01  # how often uploads look whether the events beside are on the wire


class BesideRaw:
    """The side tasks of one engine; ``first_choice()`` is the scheduler's pick now
    (None: nothing to send), ``send_meta(stream, handshake)`` a metadata send beside
    ``handshake``, ``bodies_sent()`` whether its PUTs under way have all handed their
    bodies to the socket."""

    def __init__(
        self,
        handshakes: Handshakes,
        *,
        first_choice: Callable[[], Stream | None],
        paused: Callable[[], bool],
        send_meta: Callable[[Stream, asyncio.Task[None] | None], Coroutine[Any, Any, None]],
        bodies_sent: Callable[[], bool],
    ) -> None:
        self.handshakes = handshakes
        self._first_choice, self._paused, self._send_meta = first_choice, paused, send_meta
        self._bodies_sent = bodies_sent
        self.handshake: asyncio.Task[None] | None = None
        self.metadata: asyncio.Task[None] | None = None

    async def around(self, uploads: Awaitable[None]) -> None:
        """Await ``uploads``, then the side tasks (a failed one raises); if the uploads
        fail or are cancelled, the side tasks are cancelled."""
        try:
            await uploads
        except BaseException:
            for side in self._take():
                side.cancel()
                await asyncio.gather(side, return_exceptions=True)
            raise
        for side in self._take():
            await side  # a failed one raises: the engine backs off

    def _take(self) -> list[asyncio.Task[None]]:
        sides = [t for t in (self.handshake, self.metadata) if t is not None]
        self.handshake = self.metadata = None
        return sides

    async def goes_on(self, stream: Stream) -> bool:
        """Whether an upload of ``stream`` may send its next chunk (it waits for events)."""
        while True:
            for side in (self.handshake, self.metadata):
                if side is not None and side.done() and (side.cancelled() or side.exception()):
                    return False  # raised by around()
            if self.handshake is not None and self.handshake.done():
                self.handshake = None
            if self.metadata is not None:
                if not self.metadata.done():
                    if self._bodies_sent():  # the events are on the wire: raw goes behind
                        return not self._paused()
                    await asyncio.wait({self.metadata}, timeout=SIDE_POLL_S)
                    continue
                self.metadata = None
            if self.handshakes.due() and self.handshake is None:
                self.handshake = _side(self.handshakes.run())
            choice = self._first_choice()
            if self._paused() or choice is None or not choice.is_metadata:
                return choice is stream and not self._paused()
            self.metadata = _side(self._send_meta(choice, self.handshake))


def _side(work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """A side task in a fresh context: none of the uploads' byte tallies."""
    return asyncio.create_task(work, context=contextvars.Context())
