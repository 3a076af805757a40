"""One raw blob per call: open it from the blob source, upload it, settle its record.

The engine's scheduler picks a raw stream; :meth:`RawUploads.send_next` moves
that stream's next blob (:class:`~sync.raw_delivery.RawDelivery` says which and
settles it, :class:`~sync.uploader.TusUploader` moves the bytes) and keeps the
byte counts behind ``resent_bytes``.

* a blob gone from the blob store, or refused for good: skipped (kept, tried
  after a restart); 401/403 is about our credentials, not the blob: raised, the
  engine backs off and the blob is tried again;
* a damaged device copy (``BlobCopyDamaged``): given up, settled unsent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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


class RawUploads:
    def __init__(
        self, outbox: Outbox, raw: RawDelivery, uploader: TusUploader, transport: CloudTransport
    ) -> None:
        self.outbox, self.raw, self.uploader, self.transport = outbox, raw, uploader, transport
        self.resent_bytes = 0  # upload bytes sent more than once (after cuts)
        self.blob_bytes: dict[str, int] = {}  # body bytes sent per blob, all attempts

    async def send_next(self, stream: Stream, held: Callable[[], None]) -> RawSent | None:
        """Upload the next blob of ``stream``; ``held()`` is called once the cloud holds
        it (before its record is settled).  None when nothing was delivered."""
        record = self.raw.next_record(stream)
        if record is None:
            return None
        ref = self.raw.parse(record)
        if ref is None:
            return None
        try:
            path = await self.raw.blob_source.open_for_upload(ref)
        except FileNotFoundError as exc:
            self.raw.skip(record, f"blob {ref.sha256[:12]} is gone from the blob store: {exc}")
            return None
        try:
            return await self._upload_opened(stream, record, ref, path, held)
        finally:
            await self.raw.blob_source.release_upload(path)

    async def _upload_opened(
        self,
        stream: Stream,
        record: OutboxRecord,
        ref: BlobRef,
        path: Path,
        held: Callable[[], None],
    ) -> RawSent | None:
        """Upload the file the blob source opened for ``ref``; settle its record once held."""
        before = self.transport.bytes_out
        passed_over = False  # given up or skipped: its byte count is not needed any more
        try:
            metadata = upload_metadata(stream, ref, self.outbox.seq_now)
            outcome = await self.uploader.upload(path, metadata)
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
                spent = self.transport.bytes_out - before
                self.blob_bytes[ref.sha256] = self.blob_bytes.get(ref.sha256, 0) + spent
        held()
        total = self.blob_bytes.pop(ref.sha256, 0)
        if not outcome.skipped:
            self.resent_bytes += max(0, total - ref.size)
        await self.raw.delivered(record, ref)
        return RawSent(outcome.bytes_sent)
