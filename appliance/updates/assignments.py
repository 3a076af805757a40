"""Model assignments from the cloud's sync handshake, acted on in the background.

``AssignmentTap`` wraps the sync engine's transport (``sync.transport``): every
handshake answer's ``models`` reach ``AssignmentRunner.offer``; the runner acts
on them one at a time (``ModelUpdates.apply``): a download cut by the link is
retried later and resumes; a refused or failed release is not retried (the
agent audited and reported why).  Downloads share the engine's bandwidth
bucket, and wait while the metadata backlog is large (events go first).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from appliance.errors import ApplianceError
from appliance.updates.download import Fetcher
from appliance.updates.service import ModelUpdates
from sync.cloud_client import HttpAnswer
from sync.protocol import BatchAck, ModelAssignment, SyncRequest, SyncResponse
from sync.shared.signing import VerificationError
from sync.transport import CloudTransport

__all__ = ["AssignmentRunner", "AssignmentTap"]

_log = logging.getLogger(__name__)
RETRY_S = 60.0  # after a retryable failure (link cut, cloud busy), try that one again


class AssignmentTap:
    """A ``CloudTransport`` that hands each handshake's model assignments on."""

    def __init__(
        self, inner: CloudTransport, on_models: Callable[[list[ModelAssignment]], None]
    ) -> None:
        self._inner = inner
        self._on_models = on_models

    @property
    def bytes_out(self) -> int:
        return self._inner.bytes_out

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
    ) -> HttpAnswer:
        return await self._inner.request(method, path, headers=headers, body=body, ok=ok)

    async def handshake(self, request: SyncRequest) -> SyncResponse:
        answer = await self._inner.handshake(request)
        self._on_models(list(answer.models))
        return answer

    async def put_batch(self, batch_id: str, body: bytes) -> BatchAck:
        return await self._inner.put_batch(batch_id, body)

    async def blob_held(self, sha256: str) -> bool:
        return await self._inner.blob_held(sha256)

    async def close(self) -> None:
        await self._inner.close()


class AssignmentRunner:
    def __init__(
        self,
        updates: ModelUpdates,
        fetcher: Fetcher,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._updates = updates
        self._fetcher = fetcher
        self._sleep = sleep
        self._offered: list[ModelAssignment] = []
        self._finished: set[tuple[str, str, str, int | None]] = set()
        self._wake = asyncio.Event()
        self.results: dict[str, str] = {}  # "name@version" -> what happened (status page)

    def offer(self, assignments: list[ModelAssignment]) -> None:
        """The latest handshake's assignments (replace the previous ones)."""
        self._offered = assignments
        self._wake.set()

    async def run(self) -> None:
        """Act on offered assignments forever (supervised by the daemon)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            retry = False
            for assignment in list(self._offered):
                key = (assignment.name, assignment.version, assignment.action, assignment.counter)
                if key in self._finished:
                    continue
                label = f"{assignment.name}@{assignment.version}"
                try:
                    self.results[label] = await self._updates.apply(assignment, self._fetcher)
                except (VerificationError, ApplianceError) as exc:
                    self.results[label] = f"{type(exc).__name__}: {exc}"
                    if exc.retryable:
                        retry = True
                        _log.warning("model %s: %s; retrying later", label, exc)
                        continue
                    _log.error("model %s not installed: %s", label, exc)
                self._finished.add(key)
            if retry:
                await self._sleep(RETRY_S)
                self._wake.set()
