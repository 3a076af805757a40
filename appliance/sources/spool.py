"""Directory-watch source: ``<spool>/<camera_id>/*.jpg|*.png`` files become frames.

A file is moved to ``processed/`` only after its records are durable in the
outbox (``finish``), or to ``failed/`` with a ``.why`` note when it is not an
image.  An entry that cannot be a frame (a dangling symlink, a directory or
FIFO named ``*.jpg``, a file over the size limit, one that cannot be read)
also goes to ``failed/`` with its reason, without being read, so one odd entry
never stops the others being read.  Files in flight are remembered so a
file is never read twice while the daemon runs; after a restart every file
still in the spool is read again, so nothing is lost, but the models run only
on those whose records are not in the outbox (receipts, below).  A file is read
only when its camera's queue has room (``room``), so a backlog is read oldest
first as inference catches up, never decoded, dropped from the full queue and
read again at every scan.

A frame whose results could not be stored (the outbox full or the disk full)
stays in the spool (``retry_later``), and the spool then reads nothing for a
while: 1 s, doubled at each failure up to 60 s, back to the start once a frame
is stored (``finish``).  The outbox is one for all cameras, so the wait is the
whole spool's: re-reading at every scan re-ran the models on every waiting
file for nothing.  The clock is injected.  A frame whose records the outbox
refuses for good (``RecordRejected``: reading it again makes the same records)
goes to ``failed/`` with a ``.why`` note instead (``fail``), and the spool does
not wait: the other files go on.

Every move (to ``processed/`` or ``failed/``) fsyncs the destination directory,
then the source (``durable_rename``), so that a power cut after the move does
not bring the file back to be read again.

Each frame's records are stored exactly once, which the pipeline, this watcher
and the outbox share: a spool frame's ``events`` records go to the outbox in one
atomic call (``FrameProcessor``), so a refused frame stored none and reading it
again stores each once; and that call carries the file's receipt
(``spool_stored``), written in the same WriteBatch as the records.  Before a file
is decoded the outbox is asked for its receipt: held, the frame was stored (a crash
came between the commit and the move, or ``processed/`` refused the file), so
the file is only moved, never run through the models again.  A stored file that
``processed/`` does not take (its directory a file, another filesystem, no
permission) stays where it is, is not read again, and its move is tried again at
each scan.  Receipts are dropped once their file is moved; those a crash left
behind (the file moved, the receipt not yet dropped) at the next start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from appliance.errors import BadFrame
from appliance.sources.durable_rename import make_directory_durably, rename_durably
from appliance.sources.frames import Frame, Reduction, decode_frame
from appliance.sources.push_spool import move_metadata_beside, read_pushed_metadata
from appliance.sources.spool_stored import (
    RECEIPT_PREFIX,
    FileIdentity,
    SpoolReceipts,
    file_identity,
    spool_receipt,
    stale_receipts,
)
from sync.backoff import doubling_delay
from sync.errors import SyncError
from sync.shared.durable_file import replace_durably

__all__ = ["SpoolWatcher"]

_log = logging.getLogger(__name__)

_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


class SpoolWatcher:
    def __init__(
        self,
        root: Path,
        cameras: set[str],
        submit: Callable[[Frame], Awaitable[None]],
        *,
        receipts: SpoolReceipts,
        max_bytes: int,
        poll_s: float = 0.5,
        reduction: Reduction | None = None,
        room: Callable[[str], int] | None = None,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self._cameras = cameras
        self._submit = submit
        self._receipts = receipts  # the outbox: which files' records are stored
        self._max_bytes = max_bytes
        self._poll_s = poll_s
        self._reduction = reduction
        self._room = room  # frames the camera's queue takes now; None: unbounded
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._failures = 0  # failures to store in a row, each after a wait ended
        self._hold_until = 0.0  # (clock) nothing is read before this
        self._last_error: str | None = None
        # path -> identity (inode, size, mtime) of the file as read: a camera that writes
        # one name again must not have its new frame moved to processed/ unread
        self._in_flight: dict[str, FileIdentity] = {}
        self.processed_dir = root / "processed"
        self.failed_dir = root / "failed"
        for directory in (root, self.processed_dir, self.failed_dir):
            make_directory_durably(directory)  # a later move into it relies on its entry
        # stored files processed/ refused: never read again, moved when it takes them
        self._stored_not_moved: dict[Path, tuple[FileIdentity, bytes]] = {}
        self.bad_files: Counter[str] = Counter()  # per camera: moved to failed/ unread
        self._stale_receipts_dropped = False  # once per start, at the first scan
        self._wake = asyncio.Event()  # a pushed frame was written: scan now, not at the poll

    def pending(self) -> list[tuple[str, Path]]:
        """Files waiting, oldest first, not already in flight."""
        found = []
        for camera in sorted(self._cameras):
            directory = self.root / camera
            try:
                entries = list(directory.iterdir())
            except OSError:  # no such camera directory (yet), or it went away
                continue
            for path in entries:
                if path in self._stored_not_moved:
                    continue  # stored already: only its move is left
                if path.suffix.lower() in _SUFFIXES and str(path) not in self._in_flight:
                    try:
                        mtime = path.lstat().st_mtime
                    except FileNotFoundError:
                        continue  # gone since the listing
                    found.append((mtime, camera, path))
        return [(camera, path) for _, camera, path in sorted(found)]

    def _read(self, path: Path) -> tuple[bytes, FileIdentity]:
        """The file's bytes; ``BadFrame`` when the entry cannot be a frame (it is not read)."""
        try:
            info = path.stat()
        except FileNotFoundError:
            if path.is_symlink():
                raise BadFrame(f"dangling symbolic link to {os.readlink(path)}") from None
            raise  # gone since the listing: nothing to do
        if not stat.S_ISREG(info.st_mode):
            raise BadFrame("not a regular file (a directory, FIFO or device named like an image)")
        if info.st_size > self._max_bytes:
            raise BadFrame(f"frame too large: {info.st_size} bytes, limit {self._max_bytes}")
        try:
            return path.read_bytes(), file_identity(info)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise BadFrame(f"cannot be read: {exc.strerror or exc}") from exc

    async def scan_once(self) -> int:
        """Submit every new file; returns how many were submitted."""
        submitted = 0
        if not self._stale_receipts_dropped:
            await self._drop_stale_receipts()
            self._stale_receipts_dropped = True
        if self._stored_not_moved:
            await self._move_stored()
        if self._clock() < self._hold_until:
            return 0  # the outbox refused the last frame: wait before reading again
        for camera, path in self.pending():
            if self._room is not None and self._room(camera) <= 0:
                continue  # left for a later scan: a file waits in the spool, not in memory
            try:
                data, identity = await asyncio.to_thread(self._read, path)
                if self._receipts.receipt(_receipt(path, identity)) is not None:
                    await self._move_stored_file(path, identity)  # stored before a crash
                    continue
                frame = await asyncio.to_thread(
                    decode_frame,
                    camera,
                    data,
                    None,
                    max_bytes=self._max_bytes,
                    metadata=await asyncio.to_thread(read_pushed_metadata, path),
                    source="spool",
                    reduction=self._reduction,
                )
            except BadFrame as exc:
                try:
                    await asyncio.to_thread(self._move, path, self.failed_dir / camera, str(exc))
                except OSError as move_error:  # left in place: tried again next scan
                    _log.error("spool: cannot move %s to failed/: %s (%s)", path, move_error, exc)
                else:
                    self.bad_files[camera] += 1
                    _log.warning("spool: %s is not a frame, moved to failed/: %s", path, exc)
                continue
            except FileNotFoundError:
                continue
            frame.spool_path = str(path)
            self._in_flight[str(path)] = identity
            await self._submit(frame)
            submitted += 1
        return submitted

    def receipt_of(self, frame: Frame) -> bytes | None:
        """The receipt to store a spool frame's records with (its file as read); None
        for a frame that is not (or no longer) a spool file in flight."""
        if frame.spool_path is None:
            return None
        identity = self._in_flight.get(frame.spool_path)
        return None if identity is None else _receipt(Path(frame.spool_path), identity)

    async def finish(self, frame: Frame) -> None:
        """The frame's records are durable: move its file to processed/, then drop its
        receipt; unless the file was replaced since it was read (the new one is read
        next; the receipt of the old one goes).  A file processed/ refuses stays, is not
        read again, and is moved at a later scan."""
        if frame.spool_path is None:
            return
        identity = self._in_flight.get(frame.spool_path)
        try:
            path = await asyncio.to_thread(self._as_read, frame)
            if path is not None and identity is not None:
                await self._move_stored_file(path, identity)
            elif identity is not None:
                await self._drop_receipt(_receipt(Path(frame.spool_path), identity))
        finally:
            self._in_flight.pop(frame.spool_path, None)  # only now: no scan reads it again
            # the outbox takes records again (a race with ``retry_later`` costs at most
            # one step of wait)
            self._failures = 0
            self._hold_until = 0.0

    def fail(self, frame: Frame, why: str) -> Path | None:
        """The outbox refused the frame's records for good (reading the file again makes
        the same ones): move its file to ``failed/<camera>/`` with a ``.why`` note, the
        way an entry that cannot be a frame goes (synchronous).  Returns where it went,
        or None when the file was replaced or removed since it was read (a new frame,
        read as usual).  ``OSError`` when the move fails: the file stays where it is."""
        if frame.spool_path is None:
            return None
        try:
            path = self._as_read(frame)
            if path is None:
                return None
            self._move(path, self.failed_dir / frame.camera_id, why)
            return self.failed_dir / frame.camera_id / path.name
        finally:
            self._in_flight.pop(frame.spool_path, None)

    def _as_read(self, frame: Frame) -> Path | None:
        """The frame's file when it is still the one read (not removed, not written anew)."""
        assert frame.spool_path is not None
        path = Path(frame.spool_path)
        try:
            current = file_identity(path.stat())
        except FileNotFoundError:
            return None  # removed meanwhile: nothing to move
        return path if current == self._in_flight.get(frame.spool_path) else None

    async def _move_stored_file(self, path: Path, identity: FileIdentity) -> None:
        """Move a file whose records are stored to processed/ and drop its receipt; when
        processed/ refuses it, it stays, is not read again, and is tried at each scan."""
        key = _receipt(path, identity)
        try:
            await asyncio.to_thread(self._move, path, self.processed_dir / path.parent.name, None)
        except OSError as exc:
            if path not in self._stored_not_moved:  # logged once, not at every scan
                _log.error(
                    "spool: cannot move the stored frame %s to processed/: %s; it is not read"
                    " again (the outbox holds its receipt), the move is tried again at each"
                    " scan",
                    path,
                    exc,
                    extra={"file": str(path)},
                )
            self._stored_not_moved[path] = (identity, key)
            return
        if self._stored_not_moved.pop(path, None) is not None:
            _log.info("spool: stored frame %s moved to processed/ at last", path)
        await self._drop_receipt(key)

    async def _move_stored(self) -> None:
        """Try again to move the files stored but not moved."""
        for path, (identity, key) in list(self._stored_not_moved.items()):
            try:
                current = await asyncio.to_thread(path.stat)
            except FileNotFoundError:
                current = None
            if current is None or file_identity(current) != identity:
                self._stored_not_moved.pop(path, None)  # removed, or a new frame there
                await self._drop_receipt(key)
                continue
            await self._move_stored_file(path, identity)

    async def _drop_receipt(self, key: bytes) -> None:
        """The file of ``key`` is moved or gone: its receipt goes (durably).  When the
        outbox cannot, it goes at the next start (``_drop_stale_receipts``)."""
        try:
            if self._receipts.receipt(key) is None:
                return  # none stored (every task failed on the frame): no write
            await self._receipts.drop_receipt(key)
        except SyncError as exc:
            _log.warning("spool: receipt of a moved file not dropped (at the next start): %s", exc)

    async def _drop_stale_receipts(self) -> None:
        """Drop the receipts whose file is no longer in the spool as it was read: a crash
        came after its move and before its receipt was dropped."""
        held = self._receipts.receipts(RECEIPT_PREFIX)
        if not held:
            return
        stale = await asyncio.to_thread(stale_receipts, self.root, list(held))
        for key in stale:
            await self._receipts.drop_receipt(key)
        if stale:
            _log.info("spool: %d receipts of files moved before a restart dropped", len(stale))

    def retry_later(self, frame: Frame, error: str) -> float:
        """The frame's results could not be stored: its file stays in the spool, to be
        read again once the wait is over; returns the seconds left to wait.

        Only the first failure after a wait ended makes the next wait longer: the frames
        already queued that fail meanwhile wait for the same end.
        """
        self.forget(frame)
        self._last_error = error
        now = self._clock()
        if now >= self._hold_until:
            self._failures += 1
            wait = doubling_delay(self._failures, self._retry_initial_s, self._retry_max_s)
            self._hold_until = now + wait
        return self._hold_until - now

    def status(self) -> dict[str, object]:
        """For ``/v1/status``: files in flight, and the wait after a failure to store."""
        wait = max(0.0, self._hold_until - self._clock())
        return {
            "in_flight": len(self._in_flight),
            "stored_not_moved": len(self._stored_not_moved),
            "bad_files": dict(self.bad_files),  # per camera: not frames, in failed/ unread
            "retry_in_s": round(wait, 1) if wait else None,
            "failures_in_a_row": self._failures,
            "last_error": self._last_error,
        }

    def forget(self, frame: Frame) -> None:
        """The frame was dropped (queue full) or failed: leave the file to be read again."""
        if frame.spool_path is not None:
            self._in_flight.pop(frame.spool_path, None)

    @staticmethod
    def _move(path: Path, directory: Path, why: str | None) -> None:
        """Move ``path`` into ``directory`` (with a ``.why`` note when it failed) so that
        after a power cut it stays moved: the note and both directories fsync'd."""
        make_directory_durably(directory)
        target = directory / path.name
        if why is not None:
            replace_durably(target.with_name(target.name + ".why"), (why + "\n").encode())
        move_metadata_beside(path, directory)  # made durable by the frame's rename below
        rename_durably(path, target)

    def wake(self) -> None:
        """A frame was just written to the spool (a durable push): scan without waiting
        for the poll."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            await self.scan_once()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_s)
            except TimeoutError:
                pass


def _receipt(path: Path, identity: FileIdentity) -> bytes:
    return spool_receipt(path.parent.name, path.name, identity)
