"""A tus client for tests that need to know where chunks start."""

from __future__ import annotations

from pathlib import Path

from sync.cloud_client import CloudClient
from sync.engine_state import EngineStateFile
from sync.uploader import ChunkSizer, TusUploader

__all__ = ["CHUNK", "uploader_for"]

CHUNK = 64 << 10  # every chunk is this size (min == max)


def uploader_for(url: str, token: str, state_path: Path) -> TusUploader:
    """A TusUploader to ``url`` with a fixed chunk size; close its ``client`` after use."""
    client = CloudClient(url, token, request_timeout_s=5)
    return TusUploader(client, EngineStateFile(state_path), ChunkSizer(CHUNK, CHUNK, 1.0))
