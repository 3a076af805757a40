"""The sync engine's transport seam: what it needs from the wire, as one Protocol.

:class:`~sync.engine.SyncEngine` takes a :data:`TransportFactory` (as python-tuf's
``Updater`` takes a fetcher) and calls it once with its settings and its
bandwidth bucket; the default, :func:`connect_cloud`, builds the aiohttp
:class:`~sync.cloud_client.CloudClient`.  A transport raises the typed errors of
:mod:`sync.errors` (``CloudUnavailable``, ``CloudRejected`` and its
``BatchConflict``/``BatchOverlap``, ``ProtocolError``): the engine's decisions
follow them, not the transport's type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from sync.cloud_client import CloudClient, HttpAnswer
from sync.errors import MissingCloudSettings
from sync.protocol import BatchAck, SyncRequest, SyncResponse
from sync.scheduler import TokenBucket
from sync.settings import SyncSettings

__all__ = ["CloudTransport", "MissingCloudSettings", "TransportFactory", "connect_cloud"]


class CloudTransport(Protocol):
    """Requests to the ingest service on behalf of one device."""

    @property
    def bytes_out(self) -> int:
        """Request body bytes handed to the socket so far, all requests."""
        ...

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
    ) -> HttpAnswer:
        """One request (the tus client's); a status outside ``ok`` raises a typed error."""
        ...

    async def handshake(self, request: SyncRequest) -> SyncResponse:
        """``POST /v1/sync``."""
        ...

    async def put_batch(self, batch_id: str, body: bytes) -> BatchAck:
        """``PUT /v1/batches/{id}``, refused (412) when the cloud holds its seqs elsewhere."""
        ...

    async def blob_held(self, sha256: str) -> bool:
        """``HEAD /v1/blobs/{sha256}``."""
        ...

    async def close(self) -> None: ...


TransportFactory = Callable[[SyncSettings, TokenBucket], CloudTransport]


def connect_cloud(settings: SyncSettings, bucket: TokenBucket) -> CloudTransport:
    """The default transport: HTTP to ``settings.cloud_url``, paced by ``bucket``."""
    if settings.cloud_url is None or settings.token is None:
        raise MissingCloudSettings("the sync engine needs settings.cloud_url and settings.token")
    return CloudClient(
        str(settings.cloud_url),
        settings.token,
        bucket=bucket,
        request_timeout_s=settings.link.request_timeout_s,
    )
