"""Several raw uploads in flight, so the link never idles while one waits for an answer.

One tus upload sends a chunk, then waits a round trip (and the server's fsync)
for its answer; a new blob costs two more (``HEAD /v1/blobs``, the creating
``POST``).  Alone it leaves the link idle for that long each time: on a 600 ms
satellite link that is most of the time for small blobs.  :class:`RawLanes`
keeps ``lanes`` uploads of one raw stream going at once, each on its own
connection, so while one waits the others' bytes fill the link.

Priority is kept at each chunk boundary: every upload asks ``still_first()``
(the engine's scheduler: nothing more urgent - an event batch, a
``raw_requested`` blob when these are ``raw_sampled`` - and budget left) before
it sends a chunk, and stops there when not (its record is taken again first,
resumed from the server's offset).  The chunks in flight together aim at one
``chunk_target_s`` at the measured rate (:func:`plan_lanes`, each upload's
chunk is that share), so an event waits behind at most that much raw.

A daily budget is overshot by at most one blob: a new blob starts only while
the budget left exceeds the bytes of the blobs already under way.  The first
failure of an upload stops the others at their next chunk boundary and is
raised once they are done (a cut ends them all anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from sync.errors import RecordRejected
from sync.outbox import BlobRef
from sync.protocol import Stream
from sync.raw_delivery import RawDelivery
from sync.raw_uploads import RawSent, RawUploads

__all__ = ["MAX_LANES", "LanePlan", "RawLanes", "plan_lanes"]

MAX_LANES: Final = 8
SERVER_S: Final = 0.05  # the server's time per request (fsync of a chunk), roughly


@dataclass(frozen=True, slots=True)
class LanePlan:
    lanes: int  # uploads in flight
    chunk_bytes: int  # the largest chunk each sends


def plan_lanes(
    rate_Bps: float | None,
    rtt_s: float | None,
    *,
    target_s: float,
    blob_bytes: int,
    min_chunk: int,
    max_chunk: int,
) -> LanePlan:
    """Pure: how many uploads to keep in flight, and their chunk size.

    A chunk is about two bandwidth-delay products (its answer's wait is then a
    third of its time), never below ``min_chunk``.  While one upload waits (about
    two round trips: its answer; for a new blob, the HEAD and the POST), the
    others' requests must fill the link: ``lanes - 1`` requests >= 1.5x what the
    link carries in that time.  The chunks in flight together stay within
    ``target_s`` at the link rate (what an event may wait behind), except that two
    uploads always go, so one answer never idles the link.  Unknown rate: two
    uploads of ``min_chunk``, from which the measurements ramp up.
    """
    if not rate_Bps or rtt_s is None:
        return LanePlan(2, min_chunk)
    window = rate_Bps * target_s
    bdp = rate_Bps * (rtt_s + SERVER_S)
    chunk = min(2 * bdp, window / 2, max_chunk)
    chunk_bytes = int(max(min_chunk, chunk))
    request = max(1, min(chunk_bytes, blob_bytes))
    idle = rate_Bps * (2 * rtt_s + SERVER_S)
    lanes = max(2, min(MAX_LANES, 1 + math.ceil(1.5 * idle / request)))
    while lanes > 2 and lanes * request > window:
        lanes -= 1
    return LanePlan(lanes, chunk_bytes)


class RawLanes:
    """Runs the uploads of one raw stream until it is no longer first or is drained."""

    def __init__(
        self,
        raw: RawDelivery,
        uploads: RawUploads,
        *,
        rate_Bps: Callable[[], float | None],
        rtt_s: Callable[[], float | None],
        target_s: float,
        min_chunk: int,
        max_chunk: int,
    ) -> None:
        self.raw, self.uploads = raw, uploads
        self._rate_Bps, self._rtt_s = rate_Bps, rtt_s
        self._target_s = target_s
        self._min_chunk, self._max_chunk = min_chunk, max_chunk
        self.lanes = 0  # uploads under way now
        self.plan = LanePlan(2, min_chunk)  # what the measurements ask for now

    async def run(
        self,
        stream: Stream,
        still_first: Callable[[], Awaitable[bool]],
        budget_left: Callable[[], int | None],
        sent: Callable[[Stream, RawSent], None],
        held: Callable[[], None],
    ) -> None:
        """Upload ``stream``'s blobs, ``planned`` at once, while ``still_first()``.

        ``sent`` is called after each upload that put bytes on the wire (delivered
        or paused), ``held`` once the cloud holds a blob."""
        failed: list[BaseException] = []
        committed: dict[asyncio.Task[None], int] = {}  # blob bytes each upload may send

        async def go_on() -> bool:
            return not failed and await still_first()

        async def lane() -> None:
            outcome = await self.uploads.send_next(stream, held, go_on)
            if outcome is not None:
                sent(stream, outcome)

        try:
            while True:
                while not failed and await go_on():
                    size = self._next_size(stream)
                    if size is None or len(committed) >= self._replan(size).lanes:
                        break
                    left = budget_left()
                    if left is not None and left <= sum(committed.values()):
                        break
                    task = asyncio.create_task(lane())
                    committed[task] = size
                    self.lanes = len(committed)
                    await asyncio.sleep(0)  # it takes its record before the next one looks
                if not committed:
                    break
                done, _ = await asyncio.wait(committed, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    del committed[task]
                    if not task.cancelled() and task.exception() is not None:
                        failed.append(task.exception())  # type: ignore[arg-type]
                self.lanes = len(committed)
        finally:
            for task in committed:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*committed, return_exceptions=True)
            self.lanes = 0
        if failed:
            raise failed[0]

    def _next_size(self, stream: Stream) -> int | None:
        """The size of the blob the next upload would take (None: none left)."""
        record = self.raw.peek(stream)
        if record is None:
            return None
        try:
            return BlobRef.from_bytes(record.payload).size
        except RecordRejected:  # an unreadable ref: the upload skips it (and says why)
            return 0

    def _replan(self, blob_bytes: int) -> LanePlan:
        self.plan = plan_lanes(
            self._rate_Bps(),
            self._rtt_s(),
            target_s=self._target_s,
            blob_bytes=max(1, blob_bytes),
            min_chunk=self._min_chunk,
            max_chunk=self._max_chunk,
        )
        self.uploads.uploader.chunk_cap = self.plan.chunk_bytes
        return self.plan
