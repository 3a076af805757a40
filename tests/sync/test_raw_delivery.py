"""Raw delivery's pure parts: the tus metadata a blob ref is uploaded with."""

from __future__ import annotations

from sync.outbox import BlobRef
from sync.protocol import Stream
from sync.raw_delivery import upload_metadata

SHA = "ab" * 32


def test_metadata_carries_the_seq_the_event_has_now() -> None:
    """A ref recorded before the outbox renumbered its records names the old seq; the
    cloud must get the event's seq as it knows it."""
    ref = BlobRef(SHA, 10, {"seq": "5", "request_id": "rr-1", "filename": "f.jpg"})
    metadata = upload_metadata(Stream.RAW_REQUESTED, ref, lambda seq: seq + 100)
    assert (metadata.seq, metadata.request_id, metadata.filename) == (105, "rr-1", "f.jpg")
    assert upload_metadata(Stream.RAW_REQUESTED, ref).seq == 5


def test_metadata_without_a_seq() -> None:
    metadata = upload_metadata(Stream.RAW_SAMPLED, BlobRef(SHA, 10), lambda seq: seq + 100)
    assert metadata.seq is None
    assert metadata.filename == f"{SHA}.bin"
