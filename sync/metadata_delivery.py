"""Metadata streams: batches out in seq order, acks in, delta sync, and holding a stream.

* The next batch of a stream is its oldest pinned, unacked boundary (a batch
  that was being sent when the process died: same records, same id, same
  bytes) or a fresh cut of the oldest records, pinned *before* it is sent.
* A 2xx acks the batch's seq range in the outbox.
* Every PUT asks the cloud to refuse a batch that shares seqs with one it holds
  under another id (412, nothing stored), so batches may go out before the
  handshake's answer: the first one does, while the handshake is on the wire.
  After a 412 the PUTs already on the wire finish (not cut mid-body and sent
  again), then the engine handshakes again and delta sync acks what the cloud
  holds; the pins of batches the cloud answered (refused, or stored after a
  refused one) no longer cap that watermark.
* A 409 (the id is held with another digest) is persisted as a conflict and
  holds the stream: records stay, unacked, and the handshake's watermark is
  capped below the conflict so delta sync does not ack them either.
* A record that does not fit its schema, or a batch the cloud refuses as
  malformed (4xx other than auth), holds the stream the same way (in memory:
  a restart tries again).  Other streams keep flowing.

The decisions (window, pins, acks, delta sync targets) are the pure classes of
:mod:`sync.delivery_window`; this module does the reads, encodes, PUTs and acks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sync.batches import BadRecord, BatchLimits, EncodedBatch, cut_batch, encode_records
from sync.cloud_client import SentTally, counting_sent
from sync.delivery_window import (
    FIRST_BATCHES_MAX_RECORDS,
    Coverage,
    DeliveryLedger,
    HandshakePhase,
    PutVerdict,
    SendWindow,
    batch_limits,
    coverage,
    next_pinned,
    put_verdict,
)
from sync.engine_state import ConflictRecord, EngineStateFile
from sync.errors import CloudRejected
from sync.outbox import Outbox, OutboxRecord
from sync.protocol import METADATA_STREAMS, BatchAck, Stream
from sync.transport import CloudTransport

__all__ = ["FIRST_BATCHES_MAX_RECORDS", "MetadataDelivery", "SentBatch"]

log = logging.getLogger(__name__)

# PUTs in flight by batch id: the batch and its task
_InFlight = dict[str, tuple[EncodedBatch, "asyncio.Task[BatchAck]"]]


@dataclass(frozen=True, slots=True)
class SentBatch:
    batch_id: str
    records: int
    body_bytes: int


class MetadataDelivery:
    def __init__(
        self,
        outbox: Outbox,
        state: EngineStateFile,
        client: CloudTransport,
        limits: BatchLimits,
        device_id: str,
        site_id: str,
        clock: Callable[[], float],
    ) -> None:
        self.outbox, self.state, self.client, self.limits = outbox, state, client, limits
        self.device_id, self.site_id = device_id, site_id
        self._clock = clock
        self._warm: dict[tuple[Stream, int], EncodedBatch] = {}  # by (stream, first seq)
        self.ledger = DeliveryLedger()
        self.stalled: dict[Stream, str] = {
            c.stream: f"409 conflict on {c.batch_id}: {c.detail}" for c in state.state.conflicts
        }
        # Failures met only by a head start (encoding ahead) or by a PUT left to finish
        # after a 412: the batch is met again when it is sent; counted so none goes unseen.
        self.quiet_failures = 0
        # PUTs under way: the tally of body bytes handed to the socket, and the body's size
        self._puts: dict[str, tuple[SentTally, int]] = {}

    @property
    def handshake_wanted(self) -> bool:
        """A 412 came: the engine should handshake again (it resets the flag)."""
        return self.ledger.handshake_wanted

    @handshake_wanted.setter
    def handshake_wanted(self, wanted: bool) -> None:
        self.ledger.handshake_wanted = wanted

    async def delta_ack(
        self, cloud: dict[Stream, int], held: dict[Stream, list[tuple[int, int]]] | None = None
    ) -> None:
        """Ack locally what the cloud already holds (delta sync): up to its watermark,
        and, when the cloud listed the batches it holds (``held``), only as far as they
        cover every record of ours without a gap."""
        self.ledger.cloud = dict(cloud)
        # First, no seq of ours may name a record the cloud holds (a new or restored
        # outbox: see Outbox.confirm_history); then the watermarks can be trusted.
        await self.outbox.confirm_history(max(cloud.values(), default=0))  # seqs above it
        pinned = {p.batch_id for s in METADATA_STREAMS for p in self.outbox.pinned_batches(s)}
        self.ledger.handshake_answered(cloud, pinned)
        for stream in METADATA_STREAMS:
            conflicts = [c.first_seq for c in self.state.state.conflicts if c.stream is stream]
            covered = None if held is None else self._covered(stream, held.get(stream, []))
            pins = self.outbox.pinned_batches(stream)
            target = self.ledger.delta_ack_target(stream, pins, conflicts, covered)
            if target > self.outbox.acked_watermark(stream):
                removed = await self.outbox.ack(stream, target)
                log.info(
                    "delta sync: cloud holds %s up to seq %d (%d acked)", stream, target, removed
                )

    def _covered(self, stream: Stream, ranges: list[tuple[int, int]]) -> Coverage:
        """How far the cloud's batches ``ranges`` cover our unacked records of ``stream``."""

        def first_after(seq: int) -> int | None:
            after = self.outbox.read(stream, seq, max_records=1, max_bytes=1)
            return after[0].seq if after else None

        found = coverage(self.outbox.acked_watermark(stream), ranges, first_after)
        if found.gap_seq is not None:
            log.warning(
                "delta sync: the cloud holds %s seqs from %d but not our seq %d; "
                "acking up to %d only (it is sent again)",
                stream,
                found.gap_from,
                found.gap_seq,
                found.covered,
            )
        return found

    # ------------------------------------------------------------------ metadata batches

    def _records_for(
        self, stream: Stream, after: int, *, flush: bool, index: int
    ) -> list[OutboxRecord]:
        """The records of the next batch after seq ``after``: a pinned range first."""
        pin = next_pinned(self.outbox.pinned_batches(stream), after)
        if pin is not None:
            records = self.outbox.read(
                stream,
                pin.first_seq - 1,
                max_records=pin.last_seq - pin.first_seq + 1,
                max_bytes=1 << 40,
            )
            return [r for r in records if r.seq <= pin.last_seq]
        limits = batch_limits(self.limits, index)
        available = self.outbox.read(
            stream, after, max_records=limits.max_records, max_bytes=limits.max_bytes
        )
        records, _ = cut_batch(available, limits, self._clock(), flush=flush)
        return records

    async def _prepare(
        self, stream: Stream, after: int, *, flush: bool, index: int
    ) -> EncodedBatch | None:
        records = self._records_for(stream, after, flush=flush, index=index)
        if not records:
            return None
        first, acked = records[0].seq, self.outbox.acked_watermark(stream)
        for key in [k for k in self._warm if k[0] is stream and k[1] <= acked]:
            del self._warm[key]  # acked ranges: never a next batch again
        warm = self._warm.pop((stream, first), None)
        if warm is not None and warm.boundary.last_seq == records[-1].seq:
            return warm
        return await asyncio.to_thread(
            encode_records, stream, records, device_id=self.device_id, site_id=self.site_id
        )

    async def warm_up(self) -> None:
        """Encode the first batch of each metadata stream ahead (run during the handshake).

        A batch encoded ahead is used only if the same seq range is still the next
        batch.  The second batch is encoded by ``send`` once the first PUT is out:
        reading its records from the outbox would hold the event loop before that.
        """
        self._warm.clear()
        if self.outbox.history_unconfirmed:
            return  # its seqs may change at the handshake (Outbox.confirm_history)
        for stream in METADATA_STREAMS:
            if stream not in self.stalled:
                await self._encode_ahead(stream, 0, 0, flush=True)

    async def send_beside(
        self,
        stream: Stream,
        keep_going: Callable[[], bool],
        handshake: asyncio.Task[None] | None,
    ) -> list[SentBatch]:
        """:meth:`send` while ``handshake`` is on the wire; a failed handshake fails it too."""
        if handshake is None:
            return await self.send(stream, keep_going)
        send = asyncio.create_task(self.send(stream, keep_going, handshake=handshake))
        try:
            await asyncio.wait({handshake, send}, return_when=asyncio.FIRST_EXCEPTION)
            if handshake.done():
                handshake.result()  # a failed handshake fails the step, as before
            return await send
        finally:
            if not send.done():
                send.cancel()
                await asyncio.gather(send, return_exceptions=True)

    async def send(
        self,
        stream: Stream,
        keep_going: Callable[[], bool],
        *,
        window: int = 2,
        handshake: asyncio.Future[None] | None = None,
    ) -> list[SentBatch]:
        """Send batches of ``stream`` in seq order, up to ``window`` PUTs in flight.

        The first batch is sent even if not full (the scheduler chose this
        stream); more follow while ``keep_going()`` (nothing of higher priority
        is waiting) and full or aged batches are ready, and so does a partial
        batch right after a full one.  The batch after the window is encoded
        while the PUTs are on the wire, so the link does not wait for the
        encoder.  Each batch is pinned before its PUT starts and acked only once
        it and every batch before it succeeded.  Until ``handshake`` is answered
        only one PUT is in flight (see ``SendWindow.limit``).  Returns what was acked.
        """
        sent: list[SentBatch] = []
        plan = SendWindow(self.limits, window)
        inflight: _InFlight = {}
        # Encodes the batch after seq ``ahead[0]`` while PUTs fly (into self._warm).
        ahead: tuple[int, asyncio.Task[None]] | None = None
        try:
            while True:
                limit = plan.limit(_phase(handshake), self.ledger.cloud.get(stream, 0))
                while plan.may_open(limit, keep_going):
                    if ahead is not None and ahead[0] <= plan.after:
                        await ahead[1]  # its batch waits in self._warm; _prepare checks it
                        ahead = None
                    try:
                        batch = await self._prepare(
                            stream, plan.after, flush=plan.flush, index=plan.index
                        )
                    except BadRecord as exc:
                        if plan.stall_on_bad_record():
                            self.stall(stream, str(exc))
                        break
                    if batch is None:
                        break
                    if self.ledger.skip_while_unanswered(batch.batch_id, _phase(handshake)):
                        break  # answered already: the handshake's watermark decides its fate
                    await self.outbox.pin_batch(batch.boundary)  # same id after a crash
                    put = self._put(batch)
                    inflight[batch.batch_id] = (batch, asyncio.create_task(put))
                    plan.opened(batch.boundary, batch.records, batch.payload_bytes)
                    await asyncio.sleep(0)  # let the PUT start before reading the next batch
                if not plan.inflight:
                    return sent
                if ahead is None and plan.encode_ahead(limit, keep_going):
                    # Without this the next batch is read and encoded only once a PUT is
                    # answered, and the link idles meanwhile.
                    encode = self._encode_ahead(stream, plan.after, plan.index, flush=plan.flush)
                    ahead = (plan.after, asyncio.create_task(encode))
                batch, task = inflight[plan.inflight[0].batch_id]
                if limit < window and not await _answer_or_ack(task, handshake):
                    continue  # the handshake answered first: the window opens
                if not await self._answered(stream, plan, inflight, batch, task):
                    return sent
                for done in plan.take_acks():
                    acked, _ = inflight.pop(done.batch_id)
                    await self.outbox.ack(stream, done.last_seq)
                    sent.append(SentBatch(acked.batch_id, acked.records, len(acked.body)))
        finally:  # later batches stay pinned and are resent (the cloud dedups by id + digest)
            tasks: list[asyncio.Task[Any]] = [put for _, put in inflight.values()]
            if ahead is not None:
                tasks.append(ahead[1])
            for pending in tasks:
                pending.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _put(self, batch: EncodedBatch) -> BatchAck:
        """``PUT`` ``batch``, counting its body bytes handed to the socket (``bodies_sent``)."""
        with counting_sent() as tally:
            self._puts[batch.batch_id] = (tally, len(batch.body))
            try:
                return await self.client.put_batch(batch.batch_id, batch.body)
            finally:
                self._puts.pop(batch.batch_id, None)

    def bodies_sent(self) -> bool:
        """Whether PUTs are under way and each has handed its whole body to the socket
        (only answers are awaited).  False with a transport that does not count them."""
        return bool(self._puts) and all(t.bytes >= size for t, size in self._puts.values())

    async def _answered(
        self,
        stream: Stream,
        plan: SendWindow,
        inflight: _InFlight,
        batch: EncodedBatch,
        task: asyncio.Task[BatchAck],
    ) -> bool:
        """Act on the oldest PUT's answer; True when it is stored (``plan`` confirms it)."""
        try:
            ack = await task
        except CloudRejected as exc:
            verdict = put_verdict(exc)
            if verdict is PutVerdict.RAISE:
                raise
            plan.drop_head()
            del inflight[batch.batch_id]
            if verdict is PutVerdict.HANDSHAKE_AGAIN:
                self.ledger.overlap_refused(batch.batch_id)
                log.warning("sync: %s; handshaking again", exc.detail)
                await self._settle(plan, inflight)
            elif verdict is PutVerdict.CONFLICT:
                self._conflict(batch, exc)
            else:
                self.stall(stream, f"batch {batch.batch_id} refused: {exc}")
            return False
        log.debug("batch %s delivered (duplicate=%s)", ack.batch_id, ack.duplicate)
        plan.confirmed(batch.batch_id)
        return True

    async def _settle(self, plan: SendWindow, inflight: _InFlight) -> None:
        """Let the PUTs on the wire finish instead of cutting them mid-body; remember
        which ones the cloud answered (stored or refused) for the next delta sync.
        Other outcomes are met again when the batch is resent."""
        while plan.inflight:
            batch, task = inflight.pop(plan.drop_head().batch_id)
            try:
                await task
            except Exception as exc:  # noqa: BLE001 - the batch stays pinned and is resent
                if put_verdict(exc) is PutVerdict.HANDSHAKE_AGAIN:
                    self.ledger.answered.add(batch.batch_id)
                else:
                    self._quiet_failure(f"PUT of {batch.batch_id} after a 412", exc)
            else:
                self.ledger.answered.add(batch.batch_id)

    async def _encode_ahead(self, stream: Stream, after: int, index: int, *, flush: bool) -> None:
        """Encode the batch after seq ``after`` into ``self._warm`` (not pinned, not sent).

        ``_prepare`` uses it only if it is still the next batch; errors are met there.
        """
        try:
            batch = await self._prepare(stream, after, flush=flush, index=index)
        except Exception as exc:  # noqa: BLE001 - only a head start; send() meets real errors
            self._quiet_failure(f"encoding {stream} ahead", exc)
            return
        if batch is not None:
            self._warm[(stream, batch.boundary.first_seq)] = batch

    def _quiet_failure(self, what: str, exc: BaseException) -> None:
        self.quiet_failures += 1
        log.info("sync: %s failed (met again when sent): %s: %s", what, type(exc).__name__, exc)

    def stall(self, stream: Stream, reason: str) -> None:
        self.stalled[stream] = reason
        log.error("sync: holding stream %s, records kept: %s", stream, reason)

    def _conflict(self, batch: EncodedBatch, exc: CloudRejected) -> None:
        """409 (``BatchConflict``): persist the conflict and hold the stream."""
        b = batch.boundary
        record = ConflictRecord(
            stream=b.stream,
            first_seq=b.first_seq,
            last_seq=b.last_seq,
            batch_id=b.batch_id,
            detail=exc.detail,
        )
        self.state.state.conflicts.append(record)
        self.state.save()
        self.stall(b.stream, f"409 conflict on {b.batch_id}: {exc.detail}")


def _phase(handshake: asyncio.Future[None] | None) -> HandshakePhase:
    if handshake is None:
        return HandshakePhase.NONE
    return HandshakePhase.ANSWERED if handshake.done() else HandshakePhase.ON_THE_WIRE


async def _answer_or_ack(
    put: asyncio.Task[BatchAck], handshake: asyncio.Future[None] | None
) -> bool:
    """Wait for ``put`` or ``handshake``, whichever ends first; True if ``put`` is done."""
    if handshake is None or handshake.done():
        return True
    either: set[asyncio.Future[Any]] = {put, handshake}
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    return put.done()
