"""Spool files whose records are in the outbox but that ``processed/`` did not take.

Such a file must not be read again, or its records would be stored twice (and
the cloud would get its events twice).  It stays where the camera left it, and
a note ``<spool>/stored/<camera>/<name>.json`` says that the file with this
identity (inode, size, modification time) was stored; the note is written
crash-safe (``replace_durably``) before anyone is told, so it survives a
``kill -9`` or a power cut, and a restart does not read the file again either.
A file the camera writes again under the same name has another identity: it is
a new frame, read as usual.  The note goes once the file is moved (or gone).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from sync.durable_file import replace_durably

__all__ = ["FileIdentity", "StoredNotMoved", "file_identity"]

_log = logging.getLogger(__name__)

FileIdentity = tuple[int, int, int]
"""``(inode, size, mtime_ns)``: the same across restarts (a device number may not be)."""


def file_identity(info: os.stat_result) -> FileIdentity:
    return (info.st_ino, info.st_size, info.st_mtime_ns)


class StoredNotMoved:
    """The notes under ``<spool>/stored/``, loaded at start, kept in memory as well."""

    def __init__(self, spool_root: Path) -> None:
        self._spool_root = spool_root
        self.notes_dir = spool_root / "stored"
        self._files: dict[Path, FileIdentity] = {}
        self._load()

    def __contains__(self, path: Path) -> bool:
        return path in self._files

    def __len__(self) -> int:
        return len(self._files)

    def files(self) -> list[tuple[Path, FileIdentity]]:
        return list(self._files.items())

    def remember(self, path: Path, identity: FileIdentity) -> None:
        """Note that ``path`` (as it is now) was stored.  Held in memory even when the note
        cannot be written (``OSError`` raised: then only until the daemon stops)."""
        self._files[path] = identity
        body = json.dumps({"identity": list(identity)}).encode()
        replace_durably(self._note(path), body)

    def drop(self, path: Path) -> None:
        """The file was moved, removed, or replaced by a new frame: its note goes."""
        self._files.pop(path, None)
        try:
            self._note(path).unlink(missing_ok=True)
        except OSError as exc:  # harmless: a note whose file has another identity is ignored
            _log.warning("spool: cannot remove the note %s: %s", self._note(path), exc)

    def _note(self, path: Path) -> Path:
        return self.notes_dir / path.parent.name / (path.name + ".json")

    def _load(self) -> None:
        for note in sorted(self.notes_dir.glob("*/*.json")):
            try:
                identity = json.loads(note.read_bytes())["identity"]
                ino, size, mtime_ns = (int(part) for part in identity)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # written crash-safe, so only a hand-edited note can get here: the file
                # would be read again (its records stored twice), so say so
                _log.error("spool: note %s unreadable, ignored: %s", note, exc)
                continue
            path = self._spool_root / note.parent.name / note.name.removesuffix(".json")
            self._files[path] = (ino, size, mtime_ns)
