"""The pure eviction policy: order of classes, headroom, TTL rules (no RocksDB)."""

from __future__ import annotations

from sync.outbox.eviction import (
    ClassUsage,
    EvictionAction,
    effective_ttl,
    is_expired,
    overflow_bytes,
    plan_room,
)
from sync.protocol import Stream

CAP = 1_000_000


def usage(**bytes_per_class: int) -> dict[Stream, ClassUsage]:
    result = {s: ClassUsage(0, 0) for s in Stream}
    for name, nbytes in bytes_per_class.items():
        result[Stream(name)] = ClassUsage(max(1, nbytes // 100), nbytes)
    return result


def test_no_plan_while_there_is_room() -> None:
    current = usage(events=500_000, raw_sampled=100_000)
    assert plan_room(current, max_bytes=CAP, pending_bytes=0, incoming_bytes=1000) == []
    assert overflow_bytes(current, max_bytes=CAP, pending_bytes=0, incoming_bytes=1000) < 0


def test_order_is_raw_sampled_then_expired_requested_then_telemetry() -> None:
    current = usage(events=400_000, telemetry=300_000, raw_requested=100_000, raw_sampled=200_000)
    steps = plan_room(current, max_bytes=CAP, pending_bytes=0, incoming_bytes=10_000)
    assert [(s.stream, s.action) for s in steps] == [
        (Stream.RAW_SAMPLED, EvictionAction.DROP_OLDEST),
        (Stream.RAW_REQUESTED, EvictionAction.DROP_EXPIRED),
        (Stream.TELEMETRY, EvictionAction.COALESCE_OLDEST),
    ]
    # asks for the overflow plus a little headroom, so the next append does not evict again
    assert steps[0].bytes_to_free > 10_000


def test_pending_bytes_count_against_the_cap() -> None:
    current = usage(events=900_000, raw_sampled=50_000)
    assert plan_room(current, max_bytes=CAP, pending_bytes=0, incoming_bytes=1) == []
    steps = plan_room(current, max_bytes=CAP, pending_bytes=99_000, incoming_bytes=2_000)
    assert [s.stream for s in steps] == [Stream.RAW_SAMPLED]


def test_never_evicted_classes_are_never_planned() -> None:
    current = usage(critical=600_000, events=600_000)
    assert plan_room(current, max_bytes=CAP, pending_bytes=0, incoming_bytes=1) == []
    assert overflow_bytes(current, max_bytes=CAP, pending_bytes=0, incoming_bytes=1) > 0


def test_ttl_never_applies_to_critical_or_events() -> None:
    configured = {s: 10.0 for s in Stream}
    assert effective_ttl(Stream.CRITICAL, configured) is None
    assert effective_ttl(Stream.EVENTS, configured) is None
    assert effective_ttl(Stream.TELEMETRY, configured) == 10.0


def test_expiry_by_deadline_or_ttl() -> None:
    assert is_expired(created_at=0, expires_at=5, ttl=None, now=5)
    assert not is_expired(created_at=0, expires_at=5, ttl=None, now=4.9)
    assert is_expired(created_at=0, expires_at=None, ttl=10, now=10)
    assert not is_expired(created_at=0, expires_at=None, ttl=None, now=1e12)
