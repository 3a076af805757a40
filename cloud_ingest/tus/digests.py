"""Running sha256 of the uploads being written, so completion need not re-read them.

Each entry is the sha256 state of one upload's first ``offset`` bytes, taken
from the very buffers written to its data file.  A PATCH takes a copy valid at
its start offset and hands it back advanced once its bytes are kept (a refused
chunk never touches the entry).  When there is no entry at the right offset --
after a restart, or once the table dropped it -- :meth:`RunningDigests.at`
answers None and completion hashes the file from disk as before.

No I/O here; the table is bounded (least recently used entries go first).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

__all__ = ["RunningDigests"]


class RunningDigests:
    """sha256 states keyed by upload id, each valid at one offset."""

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._entries: OrderedDict[str, tuple[int, hashlib._Hash]] = OrderedDict()

    def at(self, upload_id: str, offset: int) -> hashlib._Hash | None:
        """A copy of the upload's state at ``offset`` (fresh at 0), or None if unknown."""
        if offset == 0:
            return hashlib.sha256()
        entry = self._entries.get(upload_id)
        if entry is None or entry[0] != offset:
            return None
        self._entries.move_to_end(upload_id)
        return entry[1].copy()

    def advance(self, upload_id: str, offset: int, state: hashlib._Hash) -> None:
        """Record ``state`` as the upload's sha256 of its first ``offset`` bytes."""
        self._entries[upload_id] = (offset, state)
        self._entries.move_to_end(upload_id)
        while len(self._entries) > self._limit:
            self._entries.popitem(last=False)

    def hexdigest(self, upload_id: str, offset: int) -> str | None:
        """The hex sha256 of the first ``offset`` bytes, or None if unknown."""
        state = self.at(upload_id, offset)
        return None if state is None else state.hexdigest()

    def forget(self, upload_id: str) -> None:
        self._entries.pop(upload_id, None)

    def __len__(self) -> int:
        return len(self._entries)
