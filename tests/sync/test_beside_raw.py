"""What goes beside raw uploads (sync.beside_raw): an upload's next chunk waits while an
event send beside it has bodies still to hand to the socket, and goes on once they are
all handed over, without waiting a round trip for the PUT's answer."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from sync.beside_raw import SIDE_POLL_S, BesideRaw
from sync.handshake import Handshakes
from sync.protocol import Stream


class NotDue:
    """A handshake schedule with nothing due."""

    def due(self) -> bool:
        return False


async def test_an_upload_goes_on_once_the_events_bodies_are_on_the_wire() -> None:
    answered = asyncio.Event()  # the PUT's answer
    on_the_wire = False  # its body handed to the socket
    events_pending = True

    async def send_events(stream: Stream, handshake: asyncio.Task[None] | None) -> None:
        nonlocal events_pending
        assert stream is Stream.EVENTS and handshake is None
        await answered.wait()
        events_pending = False

    beside = BesideRaw(
        cast(Handshakes, NotDue()),  # only its schedule is asked
        first_choice=lambda: Stream.EVENTS if events_pending else Stream.RAW_SAMPLED,
        paused=lambda: False,
        send_meta=send_events,
        bodies_sent=lambda: on_the_wire,
    )
    goes_on = asyncio.create_task(beside.goes_on(Stream.RAW_SAMPLED))
    await asyncio.sleep(10 * SIDE_POLL_S)
    assert not goes_on.done()  # the events' body is not on the wire yet: raw waits
    assert beside.metadata is not None and not beside.metadata.done()
    on_the_wire = True
    assert await asyncio.wait_for(goes_on, 1.0) is True  # before the answer
    assert not beside.metadata.done()
    answered.set()
    await beside.around(asyncio.sleep(0))  # the side task is awaited, nothing failed
    assert not events_pending


async def test_an_upload_stops_when_a_send_beside_it_failed() -> None:
    async def failing(stream: Stream, handshake: asyncio.Task[None] | None) -> None:
        raise RuntimeError("PUT refused")

    beside = BesideRaw(
        cast(Handshakes, NotDue()),
        first_choice=lambda: Stream.EVENTS,
        paused=lambda: False,
        send_meta=failing,
        bodies_sent=lambda: False,
    )
    assert await asyncio.wait_for(beside.goes_on(Stream.RAW_SAMPLED), 1.0) is False
    with pytest.raises(RuntimeError, match="PUT refused"):
        await beside.around(asyncio.sleep(0))
