"""Raw streams: walk the outbox's blob refs, upload each, acknowledge in seq order.

Rules (the engine owns one :class:`RawDelivery`):

* Records of a raw stream are taken in seq order from a per-process cursor
  (:class:`~sync.raw_cursor.RawCursor`); several may be under way at once and
  settle out of order, a record put back (its upload paused or failed) is
  taken again first.
* A blob that cannot be delivered in this process - it is gone from the blob
  store, its ref is unreadable, or the cloud refused it permanently - is
  *skipped*, never acknowledged: it stays in the outbox and is tried again on
  the next start (nothing is dropped by the sync side).
* ``Outbox.ack`` deletes a whole prefix, so a delivered record is acked only
  when no skipped record of the same stream lies below it, and no record still
  under way; otherwise it waits (a skipped one: the next start re-walks it, the
  cloud then answers "held" in one HEAD).
* A blob whose copy on the device is damaged (it no longer hashes to its
  sha256, so the cloud refuses every upload of it) is *given up*: counted,
  logged once, and settled like a delivered one, so it does not hold the raw
  stream; a raw request waiting only for it is reported as unknown.  The
  event's metadata goes as usual.  Every skip and every give-up is counted per
  stream and logged with its reason: no raw frame goes silently.
* Raw requests from the handshake are resolved through the ``BlobSource`` and
  queued as ``raw_requested`` refs carrying ``request_id`` in their meta.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Literal

from sync.engine_state import EngineStateFile
from sync.errors import RecordRejected
from sync.outbox import BlobRef, Outbox, OutboxRecord
from sync.ports import BlobSource
from sync.protocol import RAW_STREAMS, RawRequest, Stream, UploadMetadata
from sync.raw_cursor import RawCursor

__all__ = ["RawDelivery", "upload_metadata"]

log = logging.getLogger(__name__)


def upload_metadata(
    stream: Stream, ref: BlobRef, seq_now: Callable[[int], int] = lambda seq: seq
) -> UploadMetadata:
    """The tus metadata of a blob ref (``seq``/``request_id`` from its meta when present;
    ``seq_now`` gives the seq a record recorded before a renumbering has now)."""
    seq = ref.meta.get("seq", "")
    return UploadMetadata(
        sha256=ref.sha256,
        stream=stream,
        filename=ref.meta.get("filename", f"{ref.sha256}.bin"),  # generic tus servers want one
        content_type=ref.meta.get("content_type"),
        seq=seq_now(int(seq)) if seq.isdigit() else None,
        request_id=ref.meta.get("request_id"),
    )


class RawDelivery:
    def __init__(self, outbox: Outbox, state: EngineStateFile, blob_source: BlobSource) -> None:
        self.outbox = outbox
        self.state = state
        self.blob_source = blob_source
        self._cursors = {s: RawCursor() for s in RAW_STREAMS}
        self._returned: dict[tuple[Stream, int], OutboxRecord] = {}
        self.given_up: Counter[Stream] = Counter()  # damaged copies settled unsent
        self.resolve_failures = 0  # raw requests the blob source failed on (asked again)

    def peek(self, stream: Stream) -> OutboxRecord | None:
        """The record ``next_record`` would take (not taken)."""
        cursor = self._cursors[stream]
        again = cursor.next_returned()
        if again is not None:
            return self._returned[(stream, again)]
        found = self.outbox.read(stream, cursor.after_seq, max_records=1)
        return found[0] if found else None

    def next_record(self, stream: Stream) -> OutboxRecord | None:
        """Take the next record of ``stream`` for upload (a record put back first)."""
        record = self.peek(stream)
        if record is not None:
            self._returned.pop((stream, record.seq), None)
            self._cursors[stream].take(record.seq)
        return record

    def has_next(self, stream: Stream) -> bool:
        return self.peek(stream) is not None

    def under_way(self, stream: Stream) -> int:
        """Records taken and not settled (uploading now, or put back)."""
        cursor = self._cursors[stream]
        return len(cursor.flying) + len(cursor.returned)

    def put_back(self, record: OutboxRecord) -> None:
        """The upload of ``record`` stopped before the end: take it again first."""
        self._cursors[record.stream].put_back(record.seq)
        self._returned[(record.stream, record.seq)] = record

    def skipped(self, stream: Stream) -> int:
        return len(self._cursors[stream].skipped)

    def skip(self, record: OutboxRecord, reason: str) -> None:
        """Leave ``record`` in the outbox and move past it for the rest of this process."""
        self._cursors[record.stream].skip(record.seq)
        log.error(
            "raw %s seq %d not delivered (kept in the outbox, retried after restart): %s",
            record.stream,
            record.seq,
            reason,
        )

    def parse(self, record: OutboxRecord) -> BlobRef | None:
        try:
            return BlobRef.from_bytes(record.payload)
        except RecordRejected as exc:
            self.skip(record, f"unreadable blob ref: {exc}")
            return None

    async def delivered(self, record: OutboxRecord, ref: BlobRef) -> None:
        """The blob of ``record`` is in the cloud: ack what can be acked, settle its request."""
        await self._settle(record)
        self._count_down_request(ref, report_as="delivered")

    async def give_up(self, record: OutboxRecord, ref: BlobRef, reason: str) -> None:
        """The blob of ``record`` can never be sent (the device's copy is damaged):
        count it, log it, and settle it like a delivered one so it holds nothing up."""
        self.given_up[record.stream] += 1
        log.error(
            "raw %s seq %d given up, its blob will not be uploaded (the event's metadata "
            "still is): %s",
            record.stream,
            record.seq,
            reason,
        )
        await self._settle(record)
        self._count_down_request(ref, report_as="unknown")

    async def _settle(self, record: OutboxRecord) -> None:
        up_to = self._cursors[record.stream].settle(record.seq)
        if up_to is not None:
            await self.outbox.ack(record.stream, up_to)

    def _count_down_request(
        self, ref: BlobRef, *, report_as: Literal["delivered", "unknown"]
    ) -> None:
        """One blob of ``ref``'s raw request is settled; the last one reports the request.

        A request whose last blob was given up is reported unknown (the cloud marks it
        unavailable, unless an upload of another of its blobs already delivered it)."""
        request_id = ref.meta.get("request_id")
        left = self.state.state.raw_requests.get(request_id or "")
        if not request_id or left is None:
            return
        if left <= 1:
            del self.state.state.raw_requests[request_id]
            state = self.state.state
            (state.delivered if report_as == "delivered" else state.unknown).append(request_id)
        else:
            self.state.state.raw_requests[request_id] = left - 1
        self.state.save()

    async def queue_requests(self, requests: list[RawRequest]) -> int:
        """Resolve new raw requests into ``raw_requested`` refs; returns how many were queued."""
        state = self.state.state
        known = set(state.raw_requests) | set(state.delivered) | set(state.unknown)
        queued = 0
        for request in requests:
            if request.request_id in known:
                continue
            try:
                refs = await self._resolve(request)
            except Exception:  # the blob store's failure must not stop sync
                self.resolve_failures += 1
                log.exception("resolving raw request %s failed; asked again later", request)
                continue
            if not refs:
                log.warning(
                    "raw request %s names no record on this device (seq=%s, %s..%s); "
                    "reporting it as unknown",
                    request.request_id,
                    request.seq,
                    request.since,
                    request.until,
                )
                state.unknown.append(request.request_id)
                continue
            for ref in refs:
                meta = {**ref.meta, "request_id": request.request_id}
                await self.outbox.append_blob_ref(
                    Stream.RAW_REQUESTED,
                    BlobRef(ref.sha256, ref.size, meta),
                    expires_at=request.expires_at,
                )
            state.raw_requests[request.request_id] = len(refs)
            queued += len(refs)
        self.state.save()
        return queued

    async def _resolve(self, request: RawRequest) -> list[BlobRef]:
        """The blobs behind ``request``; a seq the outbox renumbered (a new outbox whose
        seqs the cloud held, see ``Outbox.confirm_history``) is also looked up under the
        seq the blob source indexed it by."""
        refs = await self.blob_source.resolve_raw_request(request)
        if not refs and request.seq is not None:
            then = self.outbox.seq_then(request.seq)
            if then != request.seq:
                refs = await self.blob_source.resolve_raw_request(
                    request.model_copy(update={"seq": then})
                )
        return refs

    def reported(self, delivered: list[str], unknown: list[str]) -> None:
        """The handshake carrying these ids succeeded: stop reporting them."""
        state = self.state.state
        state.delivered = [r for r in state.delivered if r not in set(delivered)]
        state.unknown = [r for r in state.unknown if r not in set(unknown)]
        self.state.save()
