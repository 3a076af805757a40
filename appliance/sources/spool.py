"""Directory-watch source: ``<spool>/<camera_id>/*.jpg|*.png`` files become frames.

A file is moved to ``processed/`` only after its records are durable in the
outbox (``finish``), or to ``failed/`` with a ``.why`` note when it is not an
image.  Files in flight are remembered so a file is never read twice while
the daemon runs; after a restart every file still in the spool is simply
read again (its records never reached the outbox), so nothing is lost.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from appliance.errors import BadFrame
from appliance.sources.frames import Frame, Reduction, decode_frame

__all__ = ["SpoolWatcher"]

_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


class SpoolWatcher:
    def __init__(
        self,
        root: Path,
        cameras: set[str],
        submit: Callable[[Frame], Awaitable[None]],
        *,
        max_bytes: int,
        poll_s: float = 0.5,
        reduction: Reduction | None = None,
    ) -> None:
        self.root = root
        self._cameras = cameras
        self._submit = submit
        self._max_bytes = max_bytes
        self._poll_s = poll_s
        self._reduction = reduction
        self._in_flight: set[str] = set()
        self.processed_dir = root / "processed"
        self.failed_dir = root / "failed"
        for directory in (root, self.processed_dir, self.failed_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def pending(self) -> list[tuple[str, Path]]:
        """Files waiting, oldest first, not already in flight."""
        found = []
        for camera in sorted(self._cameras):
            directory = self.root / camera
            if not directory.is_dir():
                continue
            for path in directory.iterdir():
                if path.suffix.lower() in _SUFFIXES and str(path) not in self._in_flight:
                    found.append((path.stat().st_mtime, camera, path))
        return [(camera, path) for _, camera, path in sorted(found)]

    async def scan_once(self) -> int:
        """Submit every new file; returns how many were submitted."""
        submitted = 0
        for camera, path in self.pending():
            try:
                data = await asyncio.to_thread(path.read_bytes)
                frame = await asyncio.to_thread(
                    decode_frame,
                    camera,
                    data,
                    None,
                    max_bytes=self._max_bytes,
                    source="spool",
                    reduction=self._reduction,
                )
            except BadFrame as exc:
                await asyncio.to_thread(self._move, path, self.failed_dir / camera, str(exc))
                continue
            except FileNotFoundError:
                continue
            frame.spool_path = str(path)
            self._in_flight.add(str(path))
            await self._submit(frame)
            submitted += 1
        return submitted

    def finish(self, frame: Frame) -> None:
        """The frame's records are durable: move its file to processed/ (synchronous)."""
        if frame.spool_path is None:
            return
        path = Path(frame.spool_path)
        self._move(path, self.processed_dir / frame.camera_id, None)
        self._in_flight.discard(frame.spool_path)

    def forget(self, frame: Frame) -> None:
        """The frame was dropped (queue full) or failed: leave the file to be read again."""
        if frame.spool_path is not None:
            self._in_flight.discard(frame.spool_path)

    @staticmethod
    def _move(path: Path, directory: Path, why: str | None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / path.name
        if why is not None:
            target.with_name(target.name + ".why").write_text(why + "\n", encoding="utf-8")
        os.replace(path, target)

    async def run(self) -> None:
        while True:
            await self.scan_once()
            await asyncio.sleep(self._poll_s)
