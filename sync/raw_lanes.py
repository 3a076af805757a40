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

Requests that carry blob bytes take one of ``lanes`` slots (held until the
answer); one more upload than that runs ahead (``PREPARING``), so its HEAD and
its POST's round trips overlap the others' bytes rather than idling the link.
New uploads start ``stagger_s`` apart: uploads that start together on one link
end together and then all wait for answers at once.

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
from typing import Any, Final

from sync.errors import RecordRejected
from sync.link import LinkMonitor
from sync.outbox import BlobRef
from sync.protocol import Stream
from sync.raw_delivery import RawDelivery
from sync.raw_uploads import RawSent, RawUploads
from sync.uploader import ChunkSizer

__all__ = ["MAX_LANES", "STAGGER_SHARE", "LanePlan", "RawLanes", "plan_lanes"]

MAX_LANES: Final = 8
SERVER_S: Final = 0.05  # the server's time per request (fsync of a chunk), roughly
PREPARING: Final = 1  # uploads beyond the plan: their HEAD and POST go while others send
REPLAN_S: Final = 0.25  # how often a new measurement may start another upload
# Starts at most this share of one request's wire time apart: starts a full request
# apart would cap new uploads at the link's pace, so a late start could never catch up.
STAGGER_SHARE: Final = 0.75


@dataclass(frozen=True, slots=True)
class LanePlan:
    lanes: int  # uploads in flight
    chunk_bytes: int  # the largest chunk each sends
    stagger_s: float = 0.0  # least time between two uploads' starts


def plan_lanes(
    rate_Bps: float | None,
    rtt_s: float | None,
    *,
    target_s: float,
    blob_bytes: int,
    min_chunk: int,
    max_chunk: int,
    uploads_left: int | None = None,
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

    ``uploads_left``: the backlog has no blob left to start, only this many
    uploads under way, fewer than the lanes: each then sends chunks of up to its
    share of half the window, so the round trips of the few left do not idle the
    link (one upload alone with chunks of two BDPs keeps it busy two thirds of
    the time).

    The rate errs high rather than low (one request's bytes over its time less
    the least round trip seen): a rate measured low sizes chunks and lanes that
    cannot fill the link, so the next measurement is low again.

    Uploads start at least three quarters of one request's time on the wire
    apart (at most two round trips): uploads that share the link and start
    together also end together and wait for their answers together, leaving the
    link idle, while starts kept apart stay apart; a whole request apart would
    let new uploads start only at the link's pace, so a late one never catches up.
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
    if uploads_left is not None and 0 < uploads_left < lanes:
        share = min(max_chunk, window / (2 * uploads_left))
        chunk_bytes = int(max(chunk_bytes, share))
    return LanePlan(lanes, chunk_bytes, min(STAGGER_SHARE * request / rate_Bps, 2 * rtt_s))


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
        self._blob_bytes = 1  # the size of the blob the plan was made for
        self._uploads_left: int | None = None  # set once no blob is left to start

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
        sending: set[asyncio.Task[Any] | None] = set()  # uploads with a request of bytes out
        slot_freed = asyncio.Event()

        def leave(task: asyncio.Task[Any] | None) -> None:
            if task in sending:
                sending.discard(task)
                slot_freed.set()

        async def may_go() -> bool:
            if failed or not await still_first():
                return False
            self._replan(self._blob_bytes)  # each chunk follows the latest measurements
            return True

        async def go_on() -> bool:
            """Before a request with blob bytes: wait for one of ``plan.lanes`` slots."""
            me = asyncio.current_task()
            leave(me)  # its previous request is answered
            while True:
                if not await may_go():
                    return False
                if len(sending) < self.plan.lanes:
                    sending.add(me)
                    return True
                slot_freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(slot_freed.wait(), REPLAN_S)

        async def lane() -> None:
            try:
                outcome = await self.uploads.send_next(stream, held, go_on)
            finally:
                leave(asyncio.current_task())
            if outcome is not None:
                sent(stream, outcome)

        loop = asyncio.get_running_loop()
        next_start = 0.0  # loop time before which no other upload starts
        try:
            while True:
                while await may_go():
                    size = self._next_size(stream)
                    self._uploads_left = len(committed) if size is None else None
                    if size is None or len(committed) >= self._replan(size).lanes + PREPARING:
                        break
                    if committed and loop.time() < next_start:
                        break
                    left = budget_left()
                    if left is not None and left <= sum(committed.values()):
                        break
                    task = asyncio.create_task(lane())
                    committed[task] = size
                    next_start = loop.time() + self.plan.stagger_s
                    self.lanes = len(committed)
                    await asyncio.sleep(0)  # it takes its record before the next one looks
                if not committed:
                    break
                early = next_start - loop.time()  # the next start may wait for this
                wake = min(REPLAN_S, max(0.01, early)) if early > 0 else REPLAN_S
                done, _ = await asyncio.wait(
                    committed, timeout=wake, return_when=asyncio.FIRST_COMPLETED
                )
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
            self._uploads_left = None
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
        self._blob_bytes = blob_bytes
        self.plan = plan_lanes(
            self._rate_Bps(),
            self._rtt_s(),
            target_s=self._target_s,
            blob_bytes=max(1, blob_bytes),
            min_chunk=self._min_chunk,
            max_chunk=self._max_chunk,
            uploads_left=self._uploads_left,
        )
        self.uploads.uploader.chunk_cap = self.plan.chunk_bytes
        return self.plan


def link_rate_Bps(sizer: ChunkSizer, link: LinkMonitor) -> float | None:
    """The link's rate for sizing the lanes: per request (``sizer``), else the link monitor's."""
    if sizer.rate_Bps is not None:
        return sizer.rate_Bps
    bps = link.bandwidth_bps
    return None if bps is None else bps / 8


def link_rtt_s(link: LinkMonitor) -> float | None:
    rtt_ms = link.snapshot().rtt_ms
    return None if rtt_ms is None else rtt_ms / 1000
