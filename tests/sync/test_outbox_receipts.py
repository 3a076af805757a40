"""Receipts: an ``append_many`` may carry a caller's key, stored in the same WriteBatch as
its records, so after any crash both are there or neither (the SIGKILL test is in
tests/sync/test_outbox_receipts_crash.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from sync.errors import OutboxClosed, OutboxStorageError, RecordRejected
from sync.outbox import Outbox
from sync.protocol import Stream
from sync.settings import Durability, OutboxSettings

E = Stream.EVENTS


async def test_records_and_their_receipt_are_stored_together_and_survive_a_reopen(
    open_outbox: Callable[..., Outbox],
) -> None:
    outbox = open_outbox()
    before = await outbox.append(E, b"before")
    seqs = await outbox.append_many(E, [b"a", b"b"], receipt=b"spool/gate-in/frame-1")
    assert seqs == [before + 1, before + 2]
    assert outbox.receipt(b"spool/gate-in/frame-1") == seqs[0]
    assert outbox.receipt("spool/gate-in/frame-1") == seqs[0]  # a str is its utf-8 bytes
    assert outbox.receipt(b"spool/gate-in/frame-2") is None
    await outbox.close()
    reopened = open_outbox()
    assert reopened.receipt(b"spool/gate-in/frame-1") == seqs[0]
    assert reopened.receipts(b"spool/") == {b"spool/gate-in/frame-1": seqs[0]}
    assert reopened.receipts(b"other/") == {}
    assert [r.payload for r in reopened.read(E)] == [b"before", b"a", b"b"]


async def test_appends_sharing_a_group_each_get_their_own_first_seq(
    open_outbox: Callable[..., Outbox],
) -> None:
    outbox = open_outbox()
    appends = [
        outbox.append_many(E, [b"x"] * (i + 1), receipt=None if i % 3 == 0 else f"r/{i}")
        for i in range(12)
    ]
    appends.append(outbox.append(E, b"single"))  # type: ignore[arg-type]
    results = await asyncio.gather(*appends)
    for i, seqs in enumerate(results[:12]):
        assert isinstance(seqs, list)
        if i % 3:
            assert outbox.receipt(f"r/{i}") == seqs[0]
    assert sorted(outbox.receipts(b"r/")) == sorted(f"r/{i}".encode() for i in range(12) if i % 3)
    assert outbox.stats().per_class[E].records == sum(range(1, 13)) + 1


async def test_an_acked_records_receipt_stays_until_dropped_and_a_drop_is_durable(
    open_outbox: Callable[..., Outbox],
) -> None:
    outbox = open_outbox()
    (seq,) = await outbox.append_many(E, [b"a"], receipt="k")
    await outbox.ack(E, seq)  # the cloud has it: the receipt still says it was stored
    assert outbox.receipt("k") == seq
    await outbox.drop_receipt("k")
    await outbox.drop_receipt("never-held")  # no-op
    assert outbox.receipt("k") is None
    await outbox.close()
    reopened = open_outbox()
    assert reopened.receipt("k") is None and reopened.receipts() == {}


async def test_a_drop_in_relaxed_mode_is_not_fsynced_but_applied(
    open_outbox: Callable[..., Outbox],
) -> None:
    outbox = open_outbox(OutboxSettings(durability=Durability.RELAXED))
    await outbox.append_many(E, [b"a"], receipt="k")
    await outbox.drop_receipt("k")
    await outbox.close()
    assert open_outbox().receipt("k") is None


@pytest.mark.parametrize(
    "key",
    [b"", "", b"x" * 513, "é" * 257, 42, 1.5, True, ["k"], "\ud800"],
    ids=[
        "empty-bytes",
        "empty-str",
        "too-long",
        "too-long-utf8",
        "int",
        "float",
        "bool",
        "list",
        "lone-surrogate",
    ],
)
async def test_a_bad_receipt_key_is_rejected_and_nothing_is_stored(
    open_outbox: Callable[..., Outbox], key: object
) -> None:
    outbox = open_outbox()
    with pytest.raises(RecordRejected):
        await outbox.append_many(E, [b"a"], receipt=key)  # type: ignore[arg-type]
    with pytest.raises(RecordRejected):
        outbox.receipt(key)  # type: ignore[arg-type]
    with pytest.raises(RecordRejected):
        await outbox.drop_receipt(key)  # type: ignore[arg-type]
    assert outbox.read(E) == [] and outbox.receipts() == {}


async def test_the_longest_key_is_taken_and_a_receipt_needs_records(
    open_outbox: Callable[..., Outbox],
) -> None:
    outbox = open_outbox()
    longest = bytearray(b"k" * 512)
    (seq,) = await outbox.append_many(E, [b"a"], receipt=longest)  # type: ignore[arg-type]
    assert outbox.receipt(bytes(longest)) == seq
    with pytest.raises(RecordRejected, match="receipt"):
        await outbox.append_many(E, [], receipt="nothing")
    assert outbox.receipt("nothing") is None
    assert outbox.stats().rejections["bad_receipt"] == 1


async def test_a_refused_append_stores_neither_records_nor_receipt(
    open_outbox: Callable[..., Outbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox = open_outbox()
    with pytest.raises(RecordRejected):  # one payload is not bytes: none is stored
        await outbox.append_many(E, [b"a", "b"], receipt="k")  # type: ignore[list-item]

    def failing_write(*args: object) -> None:
        raise OutboxStorageError("outbox storage error: IO error: injected")

    monkeypatch.setattr(outbox._store, "write_records", failing_write)
    with pytest.raises(OutboxStorageError):
        await outbox.append_many(E, [b"a"], receipt="k")
    monkeypatch.undo()
    assert outbox.receipt("k") is None and outbox.read(E) == []
    await outbox.append_many(E, [b"no receipt"])  # nothing left behind for a later group
    assert outbox.receipt("k") is None
    (seq,) = await outbox.append_many(E, [b"again"], receipt="k")  # the outbox reopens
    assert outbox.receipt("k") == seq


async def test_receipts_after_close_raise_outbox_closed(
    open_outbox: Callable[..., Outbox],
) -> None:
    outbox = open_outbox()
    await outbox.close()
    with pytest.raises(OutboxClosed):
        outbox.receipt("k")
    with pytest.raises(OutboxClosed):
        outbox.receipts()
    with pytest.raises(OutboxClosed):
        await outbox.drop_receipt("k")
    with pytest.raises(OutboxClosed):
        await outbox.append_many(E, [b"a"], receipt="k")
