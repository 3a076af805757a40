"""An in-memory stand-in for the outbox's receipts (``SpoolReceipts``), for watcher tests
that store no records; the restart tests use a real outbox."""

from __future__ import annotations


class MemoryReceipts:
    def __init__(self) -> None:
        self.held: dict[bytes, int] = {}

    def store(self, key: bytes | None) -> None:
        """As an append of the frame's records with this receipt would."""
        assert key is not None
        self.held[key] = len(self.held) + 1

    def receipt(self, key: bytes) -> int | None:
        return self.held.get(key)

    def receipts(self, prefix: bytes) -> dict[bytes, int]:
        return {key: seq for key, seq in self.held.items() if key.startswith(prefix)}

    async def drop_receipt(self, key: bytes) -> None:
        self.held.pop(key, None)
