"""A class count that no longer matches the records is counted again, never waited on.

A count of records over an empty class made the sync engine wait for records that
were not there (it flushed a "partial batch" of nothing ahead of raw, for ever); the
count is checked with one seek at open and set right by a read that walks the whole
class.  The drift is made here by writing a wrong count into the closed database (its
origin, a write whose caller was cancelled, is pinned in
``test_outbox_cancelled_writes.py``); these tests keep the safety net.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sync.outbox import Outbox
from sync.outbox.eviction import ClassUsage
from sync.protocol import Stream
from sync.settings import OutboxSettings
from tests.support.outbox import write_persisted_count

SMALL = OutboxSettings(min_free_disk_bytes=0, memory_budget_bytes=8 << 20)


async def test_a_count_over_an_empty_class_is_zero_after_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox"
    outbox = Outbox.open(path, SMALL)
    seqs = await outbox.append_many(Stream.EVENTS, [b"a", b"b", b"c"])
    await outbox.ack(Stream.EVENTS, seqs[-1])
    await outbox.close()
    write_persisted_count(path, Stream.EVENTS, 2, 1160)  # what a stalled soak run's outbox held

    with caplog.at_level(logging.ERROR):
        reopened = Outbox.open(path, SMALL)
    try:
        assert reopened.stats().per_class[Stream.EVENTS].records == 0
        assert "outbox count of events was 2 records" in caplog.text
        seq = await reopened.append(Stream.EVENTS, b"after")  # counts go on from zero
        assert [r.seq for r in reopened.read(Stream.EVENTS)] == [seq]
        assert reopened.stats().per_class[Stream.EVENTS].records == 1
    finally:
        await reopened.close()


async def test_a_zero_count_over_records_is_counted_again_at_open(tmp_path: Path) -> None:
    path = tmp_path / "outbox"
    outbox = Outbox.open(path, SMALL)
    await outbox.append_many(Stream.TELEMETRY, [b"x" * 100, b"y" * 50])
    held = outbox.stats().per_class[Stream.TELEMETRY]
    await outbox.close()
    write_persisted_count(path, Stream.TELEMETRY, 0, 0)

    reopened = Outbox.open(path, SMALL)
    try:
        again = reopened.stats().per_class[Stream.TELEMETRY]
        assert (again.records, again.bytes) == (held.records, held.bytes) == (2, held.bytes)
    finally:
        await reopened.close()


async def test_a_read_that_walks_an_empty_class_sets_its_count_to_zero(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = Outbox.open(tmp_path / "outbox", SMALL)
    try:
        seqs = await outbox.append_many(Stream.EVENTS, [b"a", b"b"])
        await outbox.ack(Stream.EVENTS, seqs[-1])
        # the drift made by hand on the live ledger (the safety net behind the fix)
        outbox._ledger.usage[Stream.EVENTS] = ClassUsage(2, 9)
        assert outbox.stats().per_class[Stream.EVENTS].records == 2
        with caplog.at_level(logging.ERROR):
            assert outbox.read(Stream.EVENTS) == []
        assert outbox.stats().per_class[Stream.EVENTS].records == 0
        assert "holds none: set to zero" in caplog.text
    finally:
        await outbox.close()


async def test_a_read_past_records_left_unsent_keeps_the_count(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path / "outbox", SMALL)
    try:
        seqs = await outbox.append_many(Stream.EVENTS, [b"a", b"b"])
        assert outbox.read(Stream.EVENTS, after_seq=seqs[-1]) == []  # not from the watermark
        assert outbox.stats().per_class[Stream.EVENTS].records == 2
    finally:
        await outbox.close()
