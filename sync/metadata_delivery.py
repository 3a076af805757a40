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
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sync.batches import BadRecord, BatchLimits, EncodedBatch, cut_batch, encode_records
from sync.cloud_client import BatchConflict, BatchOverlap, CloudClient, CloudRejected
from sync.engine_state import ConflictRecord, EngineStateFile
from sync.outbox import Outbox, OutboxRecord
from sync.protocol import METADATA_STREAMS, BatchAck, Stream

__all__ = ["MetadataDelivery", "SentBatch"]

log = logging.getLogger("yardlink.sync")

# The first batches of each send() hold at most this many records (the rest: the limits).
FIRST_BATCHES_MAX_RECORDS = (2_500, 5_000)


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
        client: CloudClient,
        limits: BatchLimits,
        device_id: str,
        site_id: str,
        clock: Callable[[], float],
    ) -> None:
        self.outbox, self.state, self.client, self.limits = outbox, state, client, limits
        self.device_id, self.site_id = device_id, site_id
        self._clock = clock
        self._warm: dict[tuple[Stream, int], EncodedBatch] = {}  # by (stream, first seq)
        # Pinned batch ids the cloud answered without a local ack: refused (412, never
        # stored) or stored after an earlier batch was refused (``Outbox.ack`` deletes
        # a prefix). Delta sync may ack past them.
        self.answered: set[str] = set()
        self.handshake_wanted = False  # a 412 came: the engine should handshake again
        self._cloud: dict[Stream, int] = {}  # the last handshake's watermarks
        self.stalled: dict[Stream, str] = {
            c.stream: f"409 conflict on {c.batch_id}: {c.detail}" for c in state.state.conflicts
        }

    async def delta_ack(
        self, cloud: dict[Stream, int], held: dict[Stream, list[tuple[int, int]]] | None = None
    ) -> None:
        """Ack locally what the cloud already holds (delta sync): up to its watermark,
        and, when the cloud listed the batches it holds (``held``), only as far as they
        cover every record of ours without a gap."""
        self._cloud = dict(cloud)
        # First, no seq of ours may name a record the cloud holds (a new or restored
        # outbox: see Outbox.confirm_history); then the watermarks can be trusted.
        await self.outbox.confirm_history(max(cloud.values(), default=0))  # seqs above it
        pinned = {p.batch_id for s in METADATA_STREAMS for p in self.outbox.pinned_batches(s)}
        self.answered &= pinned  # an answer counts while its pin lives
        for stream in METADATA_STREAMS:
            target = cloud.get(stream, 0)
            for conflict in self.state.state.conflicts:
                if conflict.stream is stream:
                    target = min(target, conflict.first_seq - 1)
            # Batches sent in parallel may land out of order: never trust the watermark
            # past a pinned batch we have not seen acknowledged (it is simply resent),
            # unless the cloud answered it: refused (412) or stored.
            pins = self.outbox.pinned_batches(stream)
            pins = [p for p in pins if p.batch_id not in self.answered]
            if pins:
                target = min(target, pins[0].first_seq - 1)
            if held is not None:
                target = min(target, self._covered(stream, held.get(stream, [])))
            if target > self.outbox.acked_watermark(stream):
                removed = await self.outbox.ack(stream, target)
                log.info(
                    "delta sync: cloud holds %s up to seq %d (%d acked)", stream, target, removed
                )

    def _covered(self, stream: Stream, ranges: list[tuple[int, int]]) -> int:
        """How far the cloud's batches ``ranges`` cover our unacked records of ``stream``
        from the acked watermark on, without a record of ours in a gap between them."""
        covered = self.outbox.acked_watermark(stream)
        for first, last in sorted(r for r in ranges if r[0] <= r[1]):
            if last <= covered:
                continue
            if first > covered + 1:
                after = self.outbox.read(stream, covered, max_records=1, max_bytes=1)
                if after and after[0].seq < first:
                    log.warning(
                        "delta sync: the cloud holds %s seqs from %d but not our seq %d; "
                        "acking up to %d only (it is sent again)",
                        stream,
                        first,
                        after[0].seq,
                        covered,
                    )
                    break
            covered = last
        return covered

    # ------------------------------------------------------------------ metadata batches

    def _limits(self, index: int) -> BatchLimits:
        """Limits of the ``index``-th batch of one ``send``: the first ones are smaller.

        Encoding 10,000 records takes ~0.1 s; a small first batch gets the link busy
        sooner, and each next one is encoded (and, for the second, the handshake
        answered) while the one before is on the wire.
        """
        if index >= len(FIRST_BATCHES_MAX_RECORDS):
            return self.limits
        first = FIRST_BATCHES_MAX_RECORDS[index]
        return replace(self.limits, max_records=min(first, self.limits.max_records))

    def _full(self, batch: EncodedBatch, index: int) -> bool:
        """Whether ``batch`` (the ``index``-th of a send) was cut at its limits."""
        limits = self._limits(index)
        return batch.records >= limits.max_records or batch.payload_bytes >= limits.max_bytes * 0.9

    def _records_for(
        self, stream: Stream, after: int, *, flush: bool, index: int
    ) -> list[OutboxRecord]:
        """The records of the next batch after seq ``after``: a pinned range first."""
        pins = [p for p in self.outbox.pinned_batches(stream) if p.first_seq > after]
        if pins:
            pin = pins[0]
            records = self.outbox.read(
                stream,
                pin.first_seq - 1,
                max_records=pin.last_seq - pin.first_seq + 1,
                max_bytes=1 << 40,
            )
            return [r for r in records if r.seq <= pin.last_seq]
        limits = self._limits(index)
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
            if stream in self.stalled:
                continue
            try:
                batch = await self._prepare(stream, 0, flush=True, index=0)
            except Exception:  # noqa: BLE001 - only a head start; send() meets real errors
                continue
            if batch is not None:
                self._warm[(stream, batch.boundary.first_seq)] = batch

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
        batch right after a full one (the tail of a backlog goes out with it, not
        after the window drained).  The first batches hold at most
        ``FIRST_BATCHES_MAX_RECORDS`` and the batch after the window is encoded while
        the PUTs are on the wire, so the link does not wait for the encoder.  Each
        batch is pinned before its PUT starts and acked only once it and every
        batch before it succeeded (``Outbox.ack`` deletes a prefix).  Until
        ``handshake`` is done (it is on the wire) only one PUT is in flight, so a
        probe of a link that fails costs at most one batch; after it, too, while the
        PUT in flight starts at or below the cloud's watermark (see ``_may_pipeline``).
        Returns what was acked.
        """
        sent: list[SentBatch] = []
        inflight: deque[tuple[EncodedBatch, asyncio.Task[BatchAck]]] = deque()
        # Encodes the batch after seq ``ahead[0]`` while PUTs fly (into self._warm).
        ahead: tuple[int, asyncio.Task[None]] | None = None
        after = 0
        tail = False  # the last batch was full: send what follows even if partial
        try:
            while True:
                limit = window if self._may_pipeline(stream, inflight, handshake) else 1
                while len(inflight) < limit and (not sent and not inflight or keep_going()):
                    if ahead is not None and ahead[0] <= after:
                        await ahead[1]  # its batch waits in self._warm; _prepare checks it
                        ahead = None
                    try:
                        batch = await self._prepare(
                            stream,
                            after,
                            flush=tail or not sent and not inflight,
                            index=len(sent) + len(inflight),
                        )
                    except BadRecord as exc:
                        if not inflight:
                            self.stall(stream, str(exc))
                        break
                    if batch is None:
                        break
                    if batch.batch_id in self.answered and not (
                        handshake is None or handshake.done()
                    ):
                        break  # answered already: the handshake's watermark decides its fate
                    await self.outbox.pin_batch(batch.boundary)  # same id after a crash
                    put = self.client.put_batch(batch.batch_id, batch.body)
                    inflight.append((batch, asyncio.create_task(put)))
                    after = batch.boundary.last_seq
                    tail = self._full(batch, len(sent) + len(inflight) - 1)
                    await asyncio.sleep(0)  # let the PUT start before reading the next batch
                if not inflight:
                    return sent
                if ahead is None and len(inflight) >= limit and keep_going():
                    # Without this the next batch is read and encoded only once a PUT is
                    # answered, and the link idles meanwhile.
                    index = len(sent) + len(inflight)
                    ahead = (
                        after,
                        asyncio.create_task(self._encode_ahead(stream, after, index, tail)),
                    )
                if limit < window and not await self._answer_or_ack(inflight[0][1], handshake):
                    continue  # the handshake answered first: the window opens
                batch, task = inflight.popleft()
                try:
                    ack = await task
                except BatchOverlap as exc:
                    self.answered.add(batch.batch_id)
                    self.handshake_wanted = True
                    log.warning("sync: %s; handshaking again", exc.detail)
                    await self._settle(inflight)
                    return sent
                except BatchConflict as exc:
                    self._conflict(batch, exc)
                    return sent
                except CloudRejected as exc:
                    if exc.status in (401, 403):
                        raise
                    self.stall(stream, f"batch {batch.batch_id} refused: {exc}")
                    return sent
                await self.outbox.ack(stream, batch.boundary.last_seq)
                log.debug("batch %s delivered (duplicate=%s)", ack.batch_id, ack.duplicate)
                sent.append(SentBatch(batch.batch_id, batch.records, len(batch.body)))
        finally:  # later batches stay pinned and are resent (the cloud dedups by id + digest)
            tasks: list[asyncio.Task[Any]] = [task for _, task in inflight]
            if ahead is not None:
                tasks.append(ahead[1])
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _settle(self, inflight: deque[tuple[EncodedBatch, asyncio.Task[BatchAck]]]) -> None:
        """Let the PUTs on the wire finish instead of cutting them mid-body; remember
        which ones the cloud answered (stored or refused) for the next delta sync.
        Other outcomes are met again when the batch is resent."""
        while inflight:
            batch, task = inflight[0]
            try:
                await task
            except BatchOverlap:
                self.answered.add(batch.batch_id)
            except Exception:  # noqa: BLE001, S110 - the batch stays pinned and is resent
                pass
            else:
                self.answered.add(batch.batch_id)
            inflight.popleft()

    def _may_pipeline(
        self,
        stream: Stream,
        inflight: deque[tuple[EncodedBatch, asyncio.Task[BatchAck]]],
        handshake: asyncio.Future[None] | None,
    ) -> bool:
        """Whether a second PUT may join those in flight.

        Not before the handshake's answer, nor while a PUT in flight starts at or
        below the cloud's watermark (it may be refused, 412): a batch stored above a
        refused one would raise the watermark past seqs the cloud never got.
        """
        if handshake is None:
            return True
        if not handshake.done():
            return False
        held = self._cloud.get(stream, 0)
        return all(batch.boundary.first_seq > held for batch, _ in inflight)

    @staticmethod
    async def _answer_or_ack(
        put: asyncio.Task[BatchAck], handshake: asyncio.Future[None] | None
    ) -> bool:
        """Wait for ``put`` or ``handshake``, whichever ends first; True if ``put`` is done."""
        if handshake is None or handshake.done():
            return True
        either: set[asyncio.Future[Any]] = {put, handshake}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        return put.done()

    async def _encode_ahead(self, stream: Stream, after: int, index: int, flush: bool) -> None:
        """Encode the full batch after seq ``after`` into ``self._warm`` (not pinned, not sent).

        ``_prepare`` uses it only if it is still the next batch; errors are met there.
        """
        try:
            batch = await self._prepare(stream, after, flush=flush, index=index)
        except Exception:  # noqa: BLE001 - only a head start
            return
        if batch is not None:
            self._warm[(stream, batch.boundary.first_seq)] = batch

    def stall(self, stream: Stream, reason: str) -> None:
        self.stalled[stream] = reason
        log.error("sync: holding stream %s, records kept: %s", stream, reason)

    def _conflict(self, batch: EncodedBatch, exc: BatchConflict) -> None:
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
