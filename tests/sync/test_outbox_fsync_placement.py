"""Where a group's fsync runs: the pure rule, and the outbox following it on a real disk."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.outbox.fsync_placement import WINDOW, FsyncPlacement
from sync.protocol import Stream
from sync.settings import OutboxSettings
from tests.support.outbox import OpenOutbox

LIMIT_S = 0.001
LIMIT_10_MS = OutboxSettings(fsync_in_place_below_ms=10.0)


def fast_history(placement: FsyncPlacement, count: int = WINDOW) -> None:
    for _ in range(count):
        placement.record(LIMIT_S / 10, in_place=False)


def test_in_place_only_after_a_full_window_of_short_fsyncs() -> None:
    placement = FsyncPlacement(LIMIT_S)
    fast_history(placement, WINDOW - 1)
    assert not placement.in_place_next(background_work=False)
    fast_history(placement, 1)
    assert placement.in_place_next(background_work=False)
    assert not placement.in_place_next(background_work=True)  # a flush or compaction runs


def test_one_slow_fsync_sends_the_next_window_to_the_thread() -> None:
    placement = FsyncPlacement(LIMIT_S)
    fast_history(placement)
    placement.record(LIMIT_S, in_place=True)  # at the limit counts as slow
    for _ in range(WINDOW - 1):
        assert not placement.in_place_next(background_work=False)
        fast_history(placement, 1)
    assert not placement.in_place_next(background_work=False)  # the slow one is still in
    fast_history(placement, 1)  # ...and now it has dropped out
    assert placement.in_place_next(background_work=False)
    assert (placement.in_place, placement.on_thread) == (1, 2 * WINDOW)


def test_a_zero_limit_keeps_every_fsync_on_the_thread() -> None:
    placement = FsyncPlacement(0.0)
    for _ in range(3 * WINDOW):
        placement.record(0.0, in_place=False)
    assert not placement.in_place_next(background_work=False)
    with pytest.raises(ValueError, match="limit_s"):
        FsyncPlacement(-1.0)


@given(st.lists(st.floats(min_value=0, max_value=2 * LIMIT_S), max_size=4 * WINDOW))
def test_in_place_exactly_when_the_last_window_was_all_short(durations: list[float]) -> None:
    placement = FsyncPlacement(LIMIT_S)
    for seconds in durations:
        placement.record(seconds, in_place=False)
    recent = durations[-WINDOW:]
    expected = len(recent) == WINDOW and max(recent) < LIMIT_S
    assert placement.in_place_next(background_work=False) is expected


# --------------------------------------------------------------------------- on a real disk


async def test_short_fsyncs_run_in_place_and_the_records_survive_a_reopen(
    open_outbox: OpenOutbox,
) -> None:
    outbox = open_outbox(
        OutboxSettings(fsync_in_place_below_ms=10.0)
    )  # this disk's fsyncs are far below 10 ms
    outbox._store.background_work = lambda: False  # type: ignore[method-assign]
    seqs = [await outbox.append(Stream.EVENTS, b"r%d" % i) for i in range(3 * WINDOW)]
    fsyncs = outbox.stats().fsyncs
    assert fsyncs["on_thread"] + fsyncs["in_place"] == 3 * WINDOW
    assert fsyncs["on_thread"] >= WINDOW  # the first window earns the disk its trust
    assert fsyncs["in_place"] >= 1  # (fewer than 2 * WINDOW if one took over 10 ms)
    await outbox.close()
    reopened = open_outbox(LIMIT_10_MS)
    records = reopened.read(Stream.EVENTS, max_records=10 * WINDOW)
    assert [(r.seq, r.payload) for r in records] == [(s, b"r%d" % i) for i, s in enumerate(seqs)]


async def test_no_fsync_in_place_while_rocksdb_works_in_the_background_or_when_disabled(
    open_outbox: OpenOutbox,
) -> None:
    busy = open_outbox(LIMIT_10_MS)
    busy._store.background_work = lambda: True  # type: ignore[method-assign]
    for i in range(3 * WINDOW):
        await busy.append(Stream.EVENTS, b"%d" % i)
    assert busy.stats().fsyncs == {"in_place": 0, "on_thread": 3 * WINDOW}
    await busy.close()
    disabled = open_outbox(OutboxSettings(fsync_in_place_below_ms=0.0))
    for i in range(3 * WINDOW):
        await disabled.append(Stream.EVENTS, b"%d" % i)
    assert disabled.stats().fsyncs == {"in_place": 0, "on_thread": 3 * WINDOW}


async def test_after_one_slow_fsync_the_event_loop_runs_during_the_next_ones(
    open_outbox: OpenOutbox,
) -> None:
    """A disk that turns slow stalls the loop once, then its fsyncs go to the thread:
    the loop keeps serving (a read that does not see the group yet) while the disk works."""
    outbox = open_outbox(LIMIT_10_MS)
    store = outbox._store
    store.background_work = lambda: False  # type: ignore[method-assign]
    for i in range(10 * WINDOW):  # until the disk has earned in-place fsyncs
        if outbox._fsync_placement.in_place_next(background_work=False):
            break
        await outbox.append(Stream.EVENTS, b"%d" % i)
    assert outbox._fsync_placement.in_place_next(background_work=False)
    real_sync = store.sync_wal
    disk_done = threading.Event()
    calls: list[str] = []

    def slow_disk() -> None:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            time.sleep(0.02)  # in place: the loop stalls this once
        else:
            disk_done.wait(10)
        real_sync()

    store.sync_wal = slow_disk  # type: ignore[method-assign]
    await outbox.append(Stream.EVENTS, b"slow")
    pending = asyncio.create_task(outbox.append(Stream.EVENTS, b"on the thread"))
    await asyncio.sleep(0.1)
    assert not pending.done()
    assert outbox.read(Stream.EVENTS, max_records=100)[-1].payload == b"slow"
    disk_done.set()
    await pending
    assert calls == [threading.main_thread().name, "outbox-writer"]
    assert outbox.read(Stream.EVENTS, max_records=100)[-1].payload == b"on the thread"
