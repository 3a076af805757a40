"""The pure decisions of metadata delivery: window, pins, acks, delta sync (no sockets)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.batches import BatchLimits
from sync.delivery_window import (
    Coverage,
    DeliveryLedger,
    HandshakePhase,
    PutVerdict,
    SendWindow,
    batch_limits,
    batch_ready,
    coverage,
    next_pinned,
    put_verdict,
)
from sync.errors import BatchConflict, BatchOverlap, CloudRejected, CloudUnavailable, ProtocolError
from sync.protocol import Stream

LIMITS = BatchLimits(max_records=100, max_bytes=1 << 20, max_age_s=1.0)


@dataclass(frozen=True)
class Pin:
    first_seq: int
    last_seq: int

    @property
    def batch_id(self) -> str:
        return f"dev.events.{self.first_seq}-{self.last_seq}"


def yes() -> bool:
    return True


def no() -> bool:
    return False


def test_one_put_until_the_handshake_is_answered_then_the_window() -> None:
    plan = SendWindow(LIMITS, window=3)
    assert plan.limit(HandshakePhase.NONE, 0) == 3
    assert plan.limit(HandshakePhase.ON_THE_WIRE, 0) == 1
    plan.opened(Pin(1, 10), 10, 100)
    assert plan.limit(HandshakePhase.ANSWERED, 0) == 3
    # a PUT in flight at or below the cloud's watermark may be refused (412): one at a time
    assert plan.limit(HandshakePhase.ANSWERED, 1) == 1
    assert plan.limit(HandshakePhase.ANSWERED, 10) == 1


def test_the_first_batch_goes_even_partial_then_only_while_keep_going() -> None:
    plan = SendWindow(LIMITS, window=2)
    assert plan.first and plan.flush and plan.index == 0
    assert plan.may_open(2, no)  # the scheduler chose this stream: the first goes anyway
    plan.opened(Pin(1, 5), records=5, payload_bytes=50)  # partial
    assert not plan.first and not plan.flush and plan.after == 5 and plan.index == 1
    assert not plan.may_open(2, no)
    assert plan.may_open(2, yes)
    plan.opened(Pin(6, 105), records=100, payload_bytes=500)  # full: the tail follows
    assert plan.flush
    assert not plan.may_open(2, yes)  # the window is full
    assert plan.encode_ahead(2, yes) and not plan.encode_ahead(2, no)


def test_the_first_batches_are_smaller() -> None:
    big = BatchLimits(max_records=10_000, max_bytes=4 << 20, max_age_s=5)
    assert [batch_limits(big, i).max_records for i in range(4)] == [2_500, 5_000, 10_000, 10_000]
    plan = SendWindow(big)
    plan.opened(Pin(1, 2_500), records=2_500, payload_bytes=1)
    assert plan.flush  # full for a first batch
    plan.opened(Pin(2_501, 5_000), records=2_500, payload_bytes=1)
    assert not plan.flush  # half of the second batch's limit


@dataclass(frozen=True)
class Held:
    records: int = 0
    bytes: int = 0
    oldest_age_s: float = 0.0


def test_a_young_partial_batch_waits_unless_flushed() -> None:
    assert not batch_ready(Held(99, 1000, 0.5), LIMITS, flush=False)
    assert batch_ready(Held(99, 1000, 0.5), LIMITS, flush=True)  # sync_now, or a pin waits
    assert batch_ready(Held(100, 1000, 0.5), LIMITS, flush=False)  # full by records
    assert batch_ready(Held(1, 1 << 20, 0.5), LIMITS, flush=False)  # full by bytes
    assert batch_ready(Held(1, 10, 1.0), LIMITS, flush=False)  # old enough


def test_a_bad_record_holds_the_stream_only_with_nothing_in_flight() -> None:
    plan = SendWindow(LIMITS)
    assert plan.stall_on_bad_record()
    plan.opened(Pin(1, 5), 5, 5)
    assert not plan.stall_on_bad_record()


def test_acks_wait_for_every_earlier_batch() -> None:
    plan = SendWindow(LIMITS, window=3)
    pins = [Pin(1, 10), Pin(11, 20), Pin(21, 30)]
    for pin in pins:
        plan.opened(pin, 10, 10)
    plan.confirmed(pins[1].batch_id)
    assert plan.take_acks() == []
    plan.confirmed(pins[0].batch_id)
    assert [b.last_seq for b in plan.take_acks()] == [10, 20]
    assert plan.acked == 2 and [b.first_seq for b in plan.inflight] == [21]
    with pytest.raises(ValueError, match="not in flight"):
        plan.confirmed(pins[0].batch_id)


@given(st.data(), st.integers(1, 12), st.integers(1, 4))
def test_acks_are_monotone_and_only_of_confirmed_prefixes(
    data: st.DataObject, n: int, window: int
) -> None:
    """Whatever order the cloud answers in, the outbox is acked in seq order, and a
    seq is acked only once its batch and every batch before it were stored."""
    plan = SendWindow(LIMITS, window=window)
    pins = [Pin(10 * i + 1, 10 * i + 10) for i in range(n)]
    confirmed: set[str] = set()
    acked: list[int] = []
    waiting = list(pins)
    while waiting or plan.inflight:
        while waiting and plan.may_open(window, yes):
            plan.opened(waiting.pop(0), 10, 10)
        batch = data.draw(st.sampled_from(list(plan.inflight)))
        if batch.batch_id in confirmed:
            continue
        plan.confirmed(batch.batch_id)
        confirmed.add(batch.batch_id)
        for done in plan.take_acks():
            assert not acked or done.last_seq > acked[-1]  # monotone
            earlier = [p for p in pins if p.last_seq <= done.last_seq]
            assert all(p.batch_id in confirmed for p in earlier)  # never ahead of the cloud
            acked.append(done.last_seq)
    assert acked == [p.last_seq for p in pins]
    assert plan.acked == n


pin_lists = st.lists(st.integers(1, 50), min_size=0, max_size=8).map(
    lambda sizes: [Pin(sum(sizes[:i]) + i + 1, sum(sizes[: i + 1]) + i) for i in range(len(sizes))]
)


@given(pin_lists)
def test_pins_are_resent_as_they_were_after_a_restart(pins: list[Pin]) -> None:
    """A fresh send (after a restart) walks the pins it finds, same ranges, same ids."""
    walked, after = [], 0
    while (pin := next_pinned(pins, after)) is not None:
        walked.append(pin)
        after = pin.last_seq
    assert walked == pins


def test_a_pin_below_the_cursor_is_not_sent_again() -> None:
    pins = [Pin(1, 10), Pin(11, 20)]
    assert next_pinned(pins, 10) == pins[1]
    assert next_pinned(pins, 20) is None


def test_put_verdicts() -> None:
    assert put_verdict(None) is PutVerdict.ACK
    assert put_verdict(BatchOverlap(412, "overlap", "")) is PutVerdict.HANDSHAKE_AGAIN
    assert put_verdict(BatchConflict(409, "conflict", "")) is PutVerdict.CONFLICT
    assert put_verdict(CloudRejected(400, "bad_batch", "")) is PutVerdict.HOLD
    assert put_verdict(CloudRejected(401, "unauthorized", "")) is PutVerdict.RAISE
    assert put_verdict(CloudRejected(403, "forbidden", "")) is PutVerdict.RAISE
    assert put_verdict(CloudUnavailable("cut")) is PutVerdict.RAISE
    assert put_verdict(ProtocolError("bad answer")) is PutVerdict.RAISE


def test_delta_ack_target_stops_below_conflicts_and_unanswered_pins() -> None:
    ledger = DeliveryLedger()
    ledger.handshake_answered({Stream.EVENTS: 100}, [])
    assert ledger.delta_ack_target(Stream.EVENTS, [], [], None) == 100
    assert ledger.delta_ack_target(Stream.TELEMETRY, [], [], None) == 0
    assert ledger.delta_ack_target(Stream.EVENTS, [], [41], None) == 40
    pins = [Pin(51, 60), Pin(61, 70)]
    assert ledger.delta_ack_target(Stream.EVENTS, pins, [], None) == 50
    ledger.overlap_refused(pins[0].batch_id)  # 412: the cloud answered it, never stored
    assert ledger.handshake_wanted
    assert ledger.delta_ack_target(Stream.EVENTS, pins, [], None) == 60
    assert ledger.delta_ack_target(Stream.EVENTS, pins, [], Coverage(55)) == 55
    # an answer counts while its pin lives
    ledger.handshake_answered({Stream.EVENTS: 100}, [pins[1].batch_id])
    assert ledger.answered == set()


def test_an_answered_batch_waits_for_the_handshake_on_the_wire() -> None:
    ledger = DeliveryLedger()
    ledger.answered.add("b")
    assert ledger.skip_while_unanswered("b", HandshakePhase.ON_THE_WIRE)
    assert not ledger.skip_while_unanswered("b", HandshakePhase.ANSWERED)
    assert not ledger.skip_while_unanswered("c", HandshakePhase.ON_THE_WIRE)


def test_coverage_stops_at_a_record_of_ours_in_a_gap() -> None:
    ours = [5, 6, 7, 20, 21]

    def first_after(seq: int) -> int | None:
        return next((s for s in ours if s > seq), None)

    assert coverage(4, [(5, 7), (20, 30)], first_after) == Coverage(30)  # 20 is held
    assert coverage(4, [(5, 7), (21, 30)], first_after) == Coverage(7, 20, 21)
    assert coverage(4, [(1, 7), (8, 19), (20, 30)], first_after) == Coverage(30)
    assert coverage(4, [(9, 12), (5, 8), (3, 2)], first_after) == Coverage(12)


@given(
    st.frozensets(st.integers(1, 60), max_size=30),
    st.lists(st.tuples(st.integers(1, 60), st.integers(0, 20)), max_size=8),
    st.integers(0, 10),
    st.integers(0, 70),
    st.lists(st.integers(1, 60), max_size=2),
)
def test_delta_sync_never_acks_a_seq_the_cloud_did_not_confirm(
    ours: frozenset[int],
    held_spans: list[tuple[int, int]],
    acked: int,
    watermark: int,
    conflicts: list[int],
) -> None:
    """With the cloud's held batches listed, every record of ours at or below the
    target lies in one of them, under its watermark, and below any 409 conflict."""
    unacked = sorted(s for s in ours if s > acked)
    held = [(first, first + span) for first, span in held_spans]

    def first_after(seq: int) -> int | None:
        return next((s for s in unacked if s > seq), None)

    ledger = DeliveryLedger()
    ledger.handshake_answered({Stream.EVENTS: watermark}, [])
    found = coverage(acked, held, first_after)
    target = ledger.delta_ack_target(Stream.EVENTS, [], conflicts, found)
    assert target <= watermark
    assert all(target < c for c in conflicts)
    for seq in unacked:
        if seq <= target:
            assert any(first <= seq <= last for first, last in held), (seq, target)
