"""Metadata streams: batches out in seq order, acks in, delta sync, and holding a stream.

* The next batch of a stream is its oldest pinned, unacked boundary (a batch
  that was being sent when the process died: same records, same id, same
  bytes) or a fresh cut of the oldest records, pinned *before* it is sent.
* A 2xx acks the batch's seq range in the outbox.
* A 409 (the id is held with another digest) is persisted as a conflict and
  holds the stream: records stay, unacked, and the handshake's watermark is
  capped below the conflict so delta sync does not ack them either.
* A record that does not fit its schema, or a batch the cloud refuses as
  malformed (4xx other than auth), holds the stream the same way (in memory:
  a restart tries again).  Other streams keep flowing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sync.batches import BadRecord, BatchLimits, EncodedBatch, cut_batch, encode_records
from sync.cloud_client import BatchConflict, CloudClient, CloudRejected
from sync.engine_state import ConflictRecord, EngineStateFile
from sync.outbox import Outbox
from sync.protocol import METADATA_STREAMS, Stream

__all__ = ["MetadataDelivery", "SentBatch"]

log = logging.getLogger("yardlink.sync")


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
        self.stalled: dict[Stream, str] = {
            c.stream: f"409 conflict on {c.batch_id}: {c.detail}" for c in state.state.conflicts
        }

    async def delta_ack(self, cloud: dict[Stream, int]) -> None:
        """Ack locally what the cloud already holds (delta sync)."""
        next_seq = self.outbox.stats().next_seq
        for stream in METADATA_STREAMS:
            target = cloud.get(stream, 0)
            for conflict in self.state.state.conflicts:
                if conflict.stream is stream:
                    target = min(target, conflict.first_seq - 1)
            if target >= next_seq:
                log.error(
                    "cloud watermark %d for %s is beyond any seq this outbox issued (%d); "
                    "not acking (was the outbox replaced?)",
                    target,
                    stream,
                    next_seq - 1,
                )
                continue
            if target > self.outbox.acked_watermark(stream):
                removed = await self.outbox.ack(stream, target)
                log.info(
                    "delta sync: cloud holds %s up to seq %d (%d acked)", stream, target, removed
                )

    # ------------------------------------------------------------------ metadata batches

    def _next_batch(self, stream: Stream) -> EncodedBatch | None:
        pins = self.outbox.pinned_batches(stream)
        if pins:
            pin = pins[0]
            records = self.outbox.read(
                stream,
                pin.first_seq - 1,
                max_records=pin.last_seq - pin.first_seq + 1,
                max_bytes=1 << 40,
            )
            records = [r for r in records if r.seq <= pin.last_seq]
        else:
            available = self.outbox.read(
                stream, max_records=self.limits.max_records, max_bytes=self.limits.max_bytes
            )
            records, _ = cut_batch(available, self.limits, self._clock(), flush=True)
        if not records:
            return None
        batch = encode_records(stream, records, device_id=self.device_id, site_id=self.site_id)
        if pins and batch.boundary != pins[0]:
            log.warning("pinned batch %s now covers %s", pins[0].batch_id, batch.batch_id)
        self.outbox.pin_batch(batch.boundary)  # before sending: a crash resends the same id
        return batch

    async def send(self, stream: Stream) -> SentBatch | None:
        """Send the next batch of ``stream``; None when nothing went out (empty, held)."""
        try:
            batch = self._next_batch(stream)
        except BadRecord as exc:
            self.stall(stream, str(exc))
            return None
        if batch is None:
            return None
        try:
            ack = await self.client.put_batch(batch.batch_id, batch.body)
        except BatchConflict as exc:
            self._conflict(batch, exc)
            return None
        except CloudRejected as exc:
            if exc.status in (401, 403):
                raise
            self.stall(stream, f"batch {batch.batch_id} refused: {exc}")
            return None
        await self.outbox.ack(stream, batch.boundary.last_seq)
        log.debug(
            "batch %s delivered (%d records, duplicate=%s)",
            ack.batch_id,
            ack.records,
            ack.duplicate,
        )
        return SentBatch(batch.batch_id, batch.records, len(batch.body))

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
