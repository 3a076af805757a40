"""One raw blob per call: open it from the blob source, upload it, settle its record.

The engine's scheduler picks a raw stream; :meth:`RawUploads.send_next` moves
that stream's next blob (:class:`~sync.raw_delivery.RawDelivery` says which and
settles it, :class:`~sync.uploader.TusUploader` moves the bytes) and keeps the
byte counts behind ``resent_bytes``.  Several calls run at once
(``sync.raw_lanes``): each counts the bytes its own requests sent.

* ``go_on()`` False between chunks: the upload stops there and the record is
  put back (taken again first, resumed from the server's offset);
* a failure that is not the blob's (a cut, a 401): the record is put back and
  the error raised;

* a blob gone from the blob store, or refused for good: skipped (kept, tried
  after a restart); 401/403 is about our credentials, not the blob: raised, the
  engine backs off and the blob is tried again;
* a damaged device copy (``BlobCopyDamaged``): given up, settled unsent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from sync.cloud_client import counting_sent
from sync.errors import BlobCopyDamaged, CloudRejected, PermanentUploadError
from sync.outbox import BlobRef, Outbox, OutboxRecord
from sync.protocol import Stream
from sync.raw_delivery import RawDelivery, upload_metadata
from sync.transport import CloudTransport
from sync.uploader import TusUploader

__all__ = ["RawSent", "RawUploads"]


@dataclass(frozen=True, slots=True)
class RawSent:
    bytes_sent: int  # body bytes this call put on the wire
    delivered: bool = True  # False: paused at a chunk boundary, the record was put back


class RawUploads:
    def __init__(
        self, outbox: Outbox, raw: RawDelivery, uploader: TusUploader, transport: CloudTransport
    ) -> None:
        self.outbox, self.raw, self.uploader, self.transport = outbox, raw, uploader, transport
        self.resent_bytes = 0  # upload bytes sent more than once (after cuts)
        self.blob_bytes: dict[str, int] = {}  # body bytes sent per blob, all attempts

    async def send_next(
        self,
        stream: Stream,
        held: Callable[[], None],
        go_on: Callable[[], Awaitable[bool]] | None = None,
    ) -> RawSent | None:
        """Upload the next blob of ``stream``; ``held()`` is called once the cloud holds
        it (before its record is settled).  None when nothing was sent."""
        record = self.raw.next_record(stream)
        if record is None:
            return None
        settled = False
        try:
            ref = self.raw.parse(record)
            if ref is None:
                settled = True  # skipped
                return None
            try:
                path = await self.raw.blob_source.open_for_upload(ref)
            except FileNotFoundError as exc:
                settled = True
                self.raw.skip(record, f"blob {ref.sha256[:12]} is gone from the blob store: {exc}")
                return None
            try:
                sent = await self._upload_opened(stream, record, ref, path, held, go_on)
            finally:
                await self.raw.blob_source.release_upload(path)
            settled = sent is None or sent.delivered
            return sent
        finally:
            if not settled:  # paused, failed or cancelled: the record is taken again first
                self.raw.put_back(record)

    async def _upload_opened(
        self,
        stream: Stream,
        record: OutboxRecord,
        ref: BlobRef,
        path: Path,
        held: Callable[[], None],
        go_on: Callable[[], Awaitable[bool]] | None,
    ) -> RawSent | None:
        """Upload the file the blob source opened for ``ref``; settle its record once held.

        None when it was settled unsent (given up, skipped)."""
        passed_over = False  # given up or skipped: its byte count is not needed any more
        with counting_sent() as sent_now:
            try:
                metadata = upload_metadata(stream, ref, self.outbox.seq_now)
                outcome = await self.uploader.upload(path, metadata, go_on)
            except BlobCopyDamaged as exc:  # damaged twice: nothing good to send, settle it
                passed_over = True
                await self.raw.give_up(record, ref, str(exc))
                return None
            except PermanentUploadError as exc:
                cause = exc.__cause__
                if isinstance(cause, CloudRejected) and cause.status in (401, 403):
                    raise cause from exc  # our credentials, not this blob: back off, keep it
                passed_over = True
                self.raw.skip(record, str(exc))
                return None
            finally:
                if passed_over:
                    self.blob_bytes.pop(ref.sha256, None)
                else:  # sent, or to be tried again: count what this attempt put on the wire
                    spent = sent_now.bytes
                    self.blob_bytes[ref.sha256] = self.blob_bytes.get(ref.sha256, 0) + spent
        if outcome.paused:
            return RawSent(outcome.bytes_sent, delivered=False)
        held()
        total = self.blob_bytes.pop(ref.sha256, 0)
        if not outcome.skipped:
            self.resent_bytes += max(0, total - ref.size)
        await self.raw.delivered(record, ref)
        return RawSent(outcome.bytes_sent)
