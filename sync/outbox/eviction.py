"""The outbox eviction policy: which class gives up bytes when the size cap is reached.

Pure decisions, no I/O: the outbox feeds in usage numbers and gets back an
ordered plan; the RocksDB adapter carries it out.  Order (DESIGN.md):

1. ``raw_sampled``   - oldest samples are dropped first;
2. ``raw_requested`` - only records whose request has expired;
3. ``telemetry``     - the oldest records are coalesced (or dropped without a coalescer).

``critical`` and ``events`` are never evicted; once only they (and unexpired
requested raw refs) fill the cap, producers get backpressure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from sync.protocol import Stream

__all__ = [
    "EVICTION_ORDER",
    "NEVER_EVICTED",
    "ClassUsage",
    "EvictionAction",
    "EvictionStep",
    "effective_ttl",
    "is_expired",
    "overflow_bytes",
    "plan_room",
]


class EvictionAction(StrEnum):
    DROP_OLDEST = "drop_oldest"
    DROP_EXPIRED = "drop_expired"
    COALESCE_OLDEST = "coalesce_oldest"


@dataclass(frozen=True, slots=True)
class ClassUsage:
    records: int
    bytes: int


@dataclass(frozen=True, slots=True)
class EvictionStep:
    """Free up to ``bytes_to_free`` from ``stream`` with ``action``; count it as ``reason``."""

    stream: Stream
    action: EvictionAction
    bytes_to_free: int
    reason: str


EVICTION_ORDER: Final = (
    (Stream.RAW_SAMPLED, EvictionAction.DROP_OLDEST, "raw_sampled_capacity"),
    (Stream.RAW_REQUESTED, EvictionAction.DROP_EXPIRED, "raw_requested_expired"),
    (Stream.TELEMETRY, EvictionAction.COALESCE_OLDEST, "telemetry_capacity"),
)
NEVER_EVICTED: Final = frozenset({Stream.CRITICAL, Stream.EVENTS})

# Free a little more than strictly needed so that a full outbox does not run an
# eviction pass for every single append (hysteresis), as a fraction of the cap.
_HEADROOM_FRACTION: Final = 0.02


def overflow_bytes(
    usage: Mapping[Stream, ClassUsage], *, max_bytes: int, pending_bytes: int, incoming_bytes: int
) -> int:
    """Bytes above the cap if ``incoming_bytes`` were added now (<= 0: there is room)."""
    used = sum(u.bytes for u in usage.values())
    return used + pending_bytes + incoming_bytes - max_bytes


def plan_room(
    usage: Mapping[Stream, ClassUsage], *, max_bytes: int, pending_bytes: int, incoming_bytes: int
) -> list[EvictionStep]:
    """Ordered eviction steps that would make room for ``incoming_bytes`` (empty: room now).

    Each step asks for the whole remaining need; the adapter frees what it can
    and moves on to the next step with the rest.
    """
    overflow = overflow_bytes(
        usage, max_bytes=max_bytes, pending_bytes=pending_bytes, incoming_bytes=incoming_bytes
    )
    if overflow <= 0:
        return []
    need = overflow + int(max_bytes * _HEADROOM_FRACTION)
    return [
        EvictionStep(stream, action, need, reason)
        for stream, action, reason in EVICTION_ORDER
        if usage.get(stream, ClassUsage(0, 0)).records > 0
    ]


def effective_ttl(stream: Stream, configured: Mapping[Stream, float | None]) -> float | None:
    """TTL that applies to ``stream``: never one for the never-evicted classes."""
    if stream in NEVER_EVICTED:
        return None
    return configured.get(stream)


def is_expired(created_at: float, expires_at: float | None, ttl: float | None, now: float) -> bool:
    """True when a record outlived its own deadline or its class's time to live."""
    if expires_at is not None and expires_at <= now:
        return True
    return ttl is not None and created_at + ttl <= now
