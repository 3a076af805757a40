"""Pure decisions of metadata delivery: the send window, pins, acks and delta sync.

No I/O and no asyncio: :class:`~sync.metadata_delivery.MetadataDelivery` reads the
outbox, encodes, PUTs and acks; these classes say what to do next.

* :class:`SendWindow` is one ``send()``: which batch to read next (a pinned range
  first, so a restart resends the same ids), how many PUTs may be in flight,
  and what to ack: only the prefix of batches the cloud confirmed, in seq order
  (``Outbox.ack`` deletes a prefix).
* :class:`DeliveryLedger` lives across sends: the cloud's watermarks of the last
  handshake, the pinned batches the cloud answered without a local ack, and how
  far delta sync may ack.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Protocol, TypeVar

from sync.batches import BatchLimits
from sync.errors import BatchConflict, BatchOverlap, CloudRejected
from sync.protocol import Stream

__all__ = [
    "FIRST_BATCHES_MAX_RECORDS",
    "Coverage",
    "DeliveryLedger",
    "HandshakePhase",
    "Pending",
    "PutVerdict",
    "SendWindow",
    "batch_limits",
    "batch_ready",
    "coverage",
    "next_pinned",
    "put_verdict",
]

# The first batches of each send() hold at most this many records (the rest: the limits).
FIRST_BATCHES_MAX_RECORDS = (2_500, 5_000)


class BatchRange(Protocol):
    """A batch's seq range and id (``sync.outbox.BatchBoundary`` is one)."""

    @property
    def batch_id(self) -> str: ...
    @property
    def first_seq(self) -> int: ...
    @property
    def last_seq(self) -> int: ...


R = TypeVar("R", bound=BatchRange)


class HandshakePhase(Enum):
    NONE = "none"  # no handshake in this step
    ON_THE_WIRE = "on_the_wire"  # sent, not answered yet
    ANSWERED = "answered"


class PutVerdict(Enum):
    """What the answer to the oldest PUT in flight means for the stream."""

    ACK = "ack"  # stored (or a duplicate): ack its range
    HANDSHAKE_AGAIN = "handshake_again"  # 412: let the others finish, then handshake
    CONFLICT = "conflict"  # 409: persist the conflict, hold the stream
    HOLD = "hold"  # refused as malformed: hold the stream (in memory)
    RAISE = "raise"  # 401/403 or a transport failure: the step fails, the link backs off


def put_verdict(error: BaseException | None) -> PutVerdict:
    if error is None:
        return PutVerdict.ACK
    if isinstance(error, BatchOverlap):
        return PutVerdict.HANDSHAKE_AGAIN
    if isinstance(error, BatchConflict):
        return PutVerdict.CONFLICT
    if isinstance(error, CloudRejected) and error.status not in (401, 403):
        return PutVerdict.HOLD
    return PutVerdict.RAISE


def batch_limits(limits: BatchLimits, index: int) -> BatchLimits:
    """Limits of the ``index``-th batch of one send: the first ones are smaller.

    A small first batch gets the link busy sooner, and each next one is encoded
    (and, for the second, the handshake answered) while the one before is on the wire.
    """
    if index >= len(FIRST_BATCHES_MAX_RECORDS):
        return limits
    first = FIRST_BATCHES_MAX_RECORDS[index]
    return replace(limits, max_records=min(first, limits.max_records))


class Pending(Protocol):
    """What a stream holds (``sync.outbox``'s per-class stats are one)."""

    @property
    def records(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def oldest_age_s(self) -> float: ...


def batch_ready(pending: Pending, limits: BatchLimits, *, flush: bool) -> bool:
    """Whether a metadata stream's pending records make a batch to send now: on a
    flush (``sync_now``, or a pinned batch waiting), or once full or old enough."""
    return (
        flush
        or pending.records >= limits.max_records
        or pending.bytes >= limits.max_bytes
        or pending.oldest_age_s >= limits.max_age_s
    )


def next_pinned(pins: Sequence[R], after: int) -> R | None:
    """The pinned range to send after seq ``after`` (``pins`` in seq order), if any.

    A pin outlives the process, so after a restart the same records go out under
    the same id (the cloud's idempotency removes the duplicate)."""
    return next((p for p in pins if p.first_seq > after), None)


class SendWindow:
    """One send of one stream: batches opened in seq order, acked from the front."""

    def __init__(self, limits: BatchLimits, window: int = 2) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.limits, self.window = limits, window
        self.inflight: deque[BatchRange] = deque()
        self._confirmed: set[str] = set()  # batch ids in flight the cloud stored
        self.acked = 0  # batches acked by this send
        self.after = 0  # the last seq handed to a PUT
        self._tail = False  # the last batch was full: send what follows even if partial

    @property
    def first(self) -> bool:
        """Nothing sent or in flight yet (the scheduler chose this stream: send anyway)."""
        return self.acked == 0 and not self.inflight

    @property
    def index(self) -> int:
        """The position in this send of the next batch to open."""
        return self.acked + len(self.inflight)

    @property
    def flush(self) -> bool:
        """Whether the next batch goes out even if partial (the first, or after a full one)."""
        return self._tail or self.first

    def limit(self, handshake: HandshakePhase, cloud_watermark: int) -> int:
        """How many PUTs may be in flight now.

        One until the handshake is answered (a probe of a failing link costs one
        batch), and one while a PUT in flight starts at or below the cloud's
        watermark (it may be refused, 412: a batch stored above a refused one
        would raise the watermark past seqs the cloud never got).
        """
        if handshake is HandshakePhase.NONE:
            return self.window
        if handshake is HandshakePhase.ON_THE_WIRE:
            return 1
        if all(b.first_seq > cloud_watermark for b in self.inflight):
            return self.window
        return 1

    def may_open(self, limit: int, keep_going: Callable[[], bool]) -> bool:
        """Whether to read and PUT another batch (``keep_going``: nothing more urgent waits)."""
        return len(self.inflight) < limit and (self.first or keep_going())

    def stall_on_bad_record(self) -> bool:
        """A record does not fit its schema: hold the stream unless PUTs are in flight
        (they finish first; the next send meets the record again with none)."""
        return not self.inflight

    def opened(self, batch: BatchRange, records: int, payload_bytes: int) -> None:
        """``batch`` was pinned and its PUT started."""
        limits = batch_limits(self.limits, self.index)
        self._tail = records >= limits.max_records or payload_bytes >= limits.max_bytes * 0.9
        self.inflight.append(batch)
        self.after = batch.last_seq

    def encode_ahead(self, limit: int, keep_going: Callable[[], bool]) -> bool:
        """Whether to encode the batch after the window now, while the PUTs fly."""
        return len(self.inflight) >= limit and keep_going()

    def confirmed(self, batch_id: str) -> None:
        """The cloud stored ``batch_id`` (one of the batches in flight)."""
        if all(b.batch_id != batch_id for b in self.inflight):
            raise ValueError(f"batch {batch_id} is not in flight")
        self._confirmed.add(batch_id)

    def take_acks(self) -> list[BatchRange]:
        """The confirmed prefix of the window, oldest first: ack each up to its last seq."""
        done: list[BatchRange] = []
        while self.inflight and self.inflight[0].batch_id in self._confirmed:
            batch = self.inflight.popleft()
            self._confirmed.discard(batch.batch_id)
            done.append(batch)
        self.acked += len(done)
        return done

    def drop_head(self) -> BatchRange:
        """The oldest PUT was answered without an ack (settled or given up)."""
        return self.inflight.popleft()


@dataclass(frozen=True, slots=True)
class Coverage:
    """How far the cloud's held batches cover our records without a gap."""

    covered: int  # every record of ours up to here is held
    gap_seq: int | None = None  # our first record the cloud does not hold (in a gap)
    gap_from: int | None = None  # the first seq of the held batch after that gap


def coverage(
    acked: int, ranges: Iterable[tuple[int, int]], first_after: Callable[[int], int | None]
) -> Coverage:
    """Walk the cloud's held ``ranges`` up from our acked watermark ``acked``;
    ``first_after(seq)`` is our first unacked record above ``seq`` (None: none)."""
    covered = acked
    for first, last in sorted(r for r in ranges if r[0] <= r[1]):
        if last <= covered:
            continue
        if first > covered + 1:
            ours = first_after(covered)
            if ours is not None and ours < first:
                return Coverage(covered, ours, first)
        covered = last
    return Coverage(covered)


class DeliveryLedger:
    """What the engine knows of the cloud across sends (in memory; pins are durable)."""

    def __init__(self) -> None:
        # Pinned batch ids the cloud answered without a local ack: refused (412, never
        # stored) or stored after an earlier batch was refused.  Delta sync may ack past them.
        self.answered: set[str] = set()
        self.handshake_wanted = False  # a 412 came: the engine should handshake again
        self.cloud: dict[Stream, int] = {}  # the last handshake's watermarks

    def handshake_answered(self, cloud: dict[Stream, int], pinned_ids: Iterable[str]) -> None:
        self.cloud = dict(cloud)
        self.answered &= set(pinned_ids)  # an answer counts while its pin lives

    def overlap_refused(self, batch_id: str) -> None:
        self.answered.add(batch_id)
        self.handshake_wanted = True

    def skip_while_unanswered(self, batch_id: str, handshake: HandshakePhase) -> bool:
        """A batch the cloud answered already waits for the handshake's watermark."""
        return batch_id in self.answered and handshake is HandshakePhase.ON_THE_WIRE

    def delta_ack_target(
        self,
        stream: Stream,
        pins: Sequence[BatchRange],
        conflict_first_seqs: Iterable[int],
        held: Coverage | None,
    ) -> int:
        """How far delta sync may ack ``stream``: the cloud's watermark, but never into
        a 409 conflict, past a pinned batch the cloud did not answer (batches sent in
        parallel may land out of order: it is simply resent), nor past a record of
        ours the cloud's held batches (``held``, when listed) do not cover."""
        target = self.cloud.get(stream, 0)
        for first in conflict_first_seqs:
            target = min(target, first - 1)
        unanswered = [p for p in pins if p.batch_id not in self.answered]
        if unanswered:
            target = min(target, unanswered[0].first_seq - 1)
        if held is not None:
            target = min(target, held.covered)
        return target
