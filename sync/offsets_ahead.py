"""The offsets of uploads under way, asked ahead while the link comes back.

After a cut every upload under way must ask the server for its offset (``HEAD``)
before it sends again: a round trip per upload before its first byte, and
uploads that start a little apart queue their HEAD behind the bytes of the
first.  :class:`OffsetsAhead` sends those HEADs at once, beside the handshake
that probes the link, so their round trips overlap it and each other; the
uploader then takes an answer instead of asking (:meth:`OffsetsAhead.take`).

An answer is taken once, only for the upload path it was asked for, and all are
dropped when a step fails (the link may have cut since).  Between the answer and
its use nothing of that upload is sent (a HEAD is asked only with no upload under
way), so the server's offset is still the one answered; if the server lost bytes
meanwhile, the PATCH meets a 409 and the uploader asks again.  A HEAD that fails
leaves nothing: the upload asks for itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping

from sync.errors import SyncError
from sync.protocol import TUS_VERSION
from sync.transport import CloudTransport

__all__ = ["OffsetsAhead"]

_Answer = tuple[str, Mapping[str, str]]  # (upload path, HEAD headers)


class OffsetsAhead:
    """HEADs of uploads under way, sent ahead; kept by blob sha256 until taken or dropped."""

    def __init__(self, client: CloudTransport) -> None:
        self.client = client
        self._asked: dict[str, asyncio.Task[_Answer | None]] = {}

    def ask(self, uploads: Iterable[tuple[str, str]]) -> None:
        """Send a HEAD for each (sha256, upload path) not asked yet."""
        for sha, path in uploads:
            if sha not in self._asked:
                self._asked[sha] = asyncio.create_task(self._head(path))

    async def take(self, sha256: str, upload_path: str) -> Mapping[str, str] | None:
        """The HEAD answer asked ahead for ``upload_path`` (waiting for it if it is on the
        wire); None when none was asked, it failed, or it was for another path."""
        task = self._asked.pop(sha256, None)
        if task is None:
            return None
        await asyncio.wait({task})
        if task.cancelled():
            return None
        answer = task.result()
        if answer is None or answer[0] != upload_path:
            return None
        return answer[1]

    async def drop(self) -> None:
        """Forget every answer (a step failed: the link may have cut since)."""
        tasks = list(self._asked.values())
        self._asked.clear()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)

    def __len__(self) -> int:
        return len(self._asked)

    async def _head(self, path: str) -> _Answer | None:
        try:
            answer = await self.client.request(
                "HEAD", path, headers={"Tus-Resumable": TUS_VERSION}, ok=(200, 204)
            )
        except SyncError:  # down, gone, refused: the upload asks for itself
            return None
        return path, answer.headers
