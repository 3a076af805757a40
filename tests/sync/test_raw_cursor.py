"""RawCursor: several raw uploads settle out of order, acks stay safe and monotone.

Hypothesis drives any interleaving of take / put back / settle / skip (as
``sync.raw_lanes`` and ``sync.raw_uploads`` do) against a model: an ack never
covers a record that is not delivered, acks only grow, and without a skip
everything delivered is acked once nothing is under way.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sync.raw_cursor import RawCursor


def test_out_of_order_settles_ack_only_the_settled_prefix() -> None:
    cursor = RawCursor()
    for seq in (3, 5, 8):
        cursor.take(seq)
    assert cursor.settle(5) is None  # 3 still under way
    assert cursor.settle(3) == 5
    assert cursor.settle(8) == 8


def test_a_record_put_back_is_taken_again_first_and_blocks_acks_above_it() -> None:
    cursor = RawCursor()
    cursor.take(1)
    cursor.take(2)
    cursor.put_back(1)
    assert cursor.next_returned() == 1
    assert cursor.settle(2) is None
    cursor.take(1)
    assert cursor.next_returned() is None
    assert cursor.settle(1) == 2


def test_after_a_skip_nothing_is_acked() -> None:
    cursor = RawCursor()
    cursor.take(1)
    cursor.take(2)
    cursor.skip(1)
    assert cursor.settle(2) is None


def test_misuse_is_a_clear_error() -> None:
    cursor = RawCursor()
    cursor.take(4)
    with pytest.raises(ValueError, match="taken already"):
        cursor.take(4)
    with pytest.raises(ValueError, match="taken already"):
        cursor.take(2)
    with pytest.raises(ValueError, match="not under way"):
        cursor.settle(9)
    cursor.settle(4)
    with pytest.raises(ValueError, match="not under way"):
        cursor.put_back(4)


class CursorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cursor = RawCursor()
        self.next_seq = 1
        self.flying: set[int] = set()
        self.returned: set[int] = set()
        self.delivered: set[int] = set()
        self.skipped: set[int] = set()
        self.acked = 0

    @rule(gap=st.integers(1, 3))
    def take_new(self, gap: int) -> None:
        if self.cursor.next_returned() is not None:
            return  # RawDelivery takes a record put back before any newer one
        seq = self.next_seq + gap - 1  # seqs of other classes lie between
        self.next_seq = seq + 1
        self.cursor.take(seq)
        self.flying.add(seq)

    @precondition(lambda self: self.returned)
    @rule()
    def take_returned(self) -> None:
        seq = self.cursor.next_returned()
        assert seq == min(self.returned)
        self.cursor.take(seq)
        self.returned.discard(seq)
        self.flying.add(seq)

    @precondition(lambda self: self.flying)
    @rule(data=st.data())
    def put_back(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.flying)))
        self.cursor.put_back(seq)
        self.flying.discard(seq)
        self.returned.add(seq)

    @precondition(lambda self: self.flying)
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.flying)))
        up_to = self.cursor.settle(seq)
        self.flying.discard(seq)
        self.delivered.add(seq)
        if up_to is not None:
            assert up_to > self.acked, "acks only grow"
            self.acked = up_to

    @precondition(lambda self: self.flying)
    @rule(data=st.data())
    def skip(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.flying)))
        self.cursor.skip(seq)
        self.flying.discard(seq)
        self.skipped.add(seq)

    @invariant()
    def an_ack_covers_only_delivered_records(self) -> None:
        taken = self.delivered | self.flying | self.returned | self.skipped
        below = {s for s in taken if s <= self.acked}
        assert below <= self.delivered

    @invariant()
    def everything_delivered_is_acked_once_nothing_is_under_way(self) -> None:
        if not (self.flying or self.returned or self.skipped) and self.delivered:
            assert self.acked == max(self.delivered)


CursorMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
test_cursor_machine = CursorMachine.TestCase
