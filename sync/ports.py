"""Ports: what the sync engine needs from the appliance, as small Protocols.

``sync`` never imports ``appliance``; the appliance implements these and hands
them to :class:`sync.engine.SyncEngine`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from sync.outbox import BlobRef
from sync.protocol import ModelInfo, RawRequest

__all__ = ["BlobSource", "ModelInventory", "RawRequest"]


class BlobSource(Protocol):
    """Where the bytes of raw blobs come from (the appliance's encrypted blob store)."""

    async def open_for_upload(self, ref: BlobRef) -> Path:
        """A file holding exactly the bytes to upload (``sha256 == ref.sha256``).

        The bytes are what may leave the site: faces blurred, sealed for the
        cloud's labelling key.  Raise ``FileNotFoundError`` when the blob is
        gone (evicted, expired); the engine then logs it and moves on.
        """
        ...

    async def release_upload(self, path: Path) -> None:
        """The engine is done with a file ``open_for_upload`` gave (delivered, failed
        or skipped: every file it opened is released once).  A source that hands out
        temporary copies deletes it here; the next attempt asks for a new one."""
        ...

    async def resolve_raw_request(self, request: RawRequest) -> list[BlobRef]:
        """The blobs a cloud raw request asks for; ``[]`` when the record is unknown.

        The engine queues the refs as ``raw_requested`` (with ``request_id`` in
        their meta) and reports unknown requests back in the next handshake.
        """
        ...


class ModelInventory(Protocol):
    """The models on the device, reported at each handshake."""

    def __call__(self) -> list[ModelInfo]: ...
