"""Opening the outbox database, or moving a damaged one aside (never a crash loop).

A database that cannot be opened or whose bookkeeping cannot be read is moved
to ``<path>.quarantine/<UTC timestamp>/`` with one clear error log line, and a
fresh, empty outbox takes its place.  Conditions that will pass on their own
are *not* quarantined: another process holding the lock, or a full disk (the
records are intact and RocksDB needs free space to replay its log).

A corruption found later, while running, leaves a ``<path>.corrupt`` marker so
that the next start quarantines the database.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Final

from sync.errors import (
    OutboxCorrupted,
    OutboxDiskFull,
    OutboxStorageError,
    PermanentSyncError,
)
from sync.outbox.records import LoadedState
from sync.outbox.store import OutboxStore, classify_storage_error
from sync.shared.durable_file import make_directory_durably

__all__ = ["corrupt_marker", "mark_corrupt", "open_or_quarantine"]

log = logging.getLogger(__name__)


def corrupt_marker(path: Path) -> Path:
    return path.with_name(path.name + ".corrupt")


def mark_corrupt(path: Path, reason: str) -> None:
    """Ask the next start to quarantine the database (a corruption seen at run time)."""
    try:
        corrupt_marker(path).write_text(reason[:2000] + "\n")
    except OSError:
        log.exception("could not write the outbox corruption marker", extra={"path": str(path)})


def _transient(message: str) -> bool:
    """Open failures that will pass: the lock is held, or the disk is full."""
    return "LOCK" in message or "lock hold" in message or "No space left" in message


_ROCKSDB_NAMES: Final = frozenset({"CURRENT", "IDENTITY", "LOCK", "LOG", "rocksdict-config.json"})
_ROCKSDB_PREFIXES: Final = ("MANIFEST-", "OPTIONS-", "LOG.old.")
_ROCKSDB_SUFFIXES: Final = (".log", ".sst", ".blob", ".dbtmp")


def _looks_like_rocksdb(name: str) -> bool:
    return (
        name in _ROCKSDB_NAMES
        or name.startswith(_ROCKSDB_PREFIXES)
        or name.endswith(_ROCKSDB_SUFFIXES)
    )


def _refuse_foreign(path: Path) -> None:
    """A wrong path is not a damaged database: refuse it rather than move it aside."""
    if path.exists() and not path.is_dir():
        raise PermanentSyncError(f"outbox path {path} is not a directory; refusing to use it")
    if not path.is_dir() or corrupt_marker(path).exists():
        return
    names = [entry.name for entry in path.iterdir()]
    if names and not any(map(_looks_like_rocksdb, names)):
        raise PermanentSyncError(
            f"{path} holds files but is not an outbox database (no RocksDB file); "
            "refusing to move it aside"
        )


def _why_unopenable(path: Path) -> str | None:
    marker = corrupt_marker(path)
    if marker.exists():
        return "marked corrupt at run time: " + marker.read_text(errors="replace").strip()
    if path.is_dir() and not (path / "CURRENT").exists() and any(path.iterdir()):
        return "CURRENT file missing from a non-empty database directory"
    return None


def _quarantine(path: Path, reason: str, now: float) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    root = path.with_name(path.name + ".quarantine")
    root.mkdir(parents=True, exist_ok=True)
    dest = root / stamp
    suffix = 1
    while dest.exists():
        dest = root / f"{stamp}-{suffix}"
        suffix += 1
    if path.exists():
        os.replace(path, dest)
    else:
        dest.mkdir()
    marker = corrupt_marker(path)
    if marker.exists():
        os.replace(marker, dest / "CORRUPT-MARKER")
    log.error(
        "outbox database quarantined; starting with an empty outbox",
        extra={"path": str(path), "quarantine": str(dest), "reason": reason[:500]},
    )
    return dest


def _open(path: Path, memory_budget: int) -> tuple[OutboxStore, LoadedState]:
    store = OutboxStore(path, memory_budget)
    try:
        return store, store.load_state()
    except BaseException:
        store.close()
        raise


def open_or_quarantine(
    path: Path, memory_budget: int, now: float
) -> tuple[OutboxStore, LoadedState, list[str]]:
    """Open the database at ``path``; quarantine it and start fresh if it is damaged."""
    make_directory_durably(path.parent)
    _refuse_foreign(path)
    reason = _why_unopenable(path)
    if reason is None:
        try:
            store, state = _open(path, memory_budget)
            return store, state, []
        except Exception as exc:  # rocksdict raises plain Exception
            message = str(exc) or type(exc).__name__
            if _transient(message):
                error = classify_storage_error(exc)
                if not isinstance(error, OutboxDiskFull):
                    error = OutboxStorageError(f"outbox database busy or unavailable: {message}")
                raise error from exc
            reason = message
    dest = _quarantine(path, reason, now)
    try:
        store, state = _open(path, memory_budget)
    except Exception as exc:
        raise OutboxCorrupted(f"cannot create a fresh outbox at {path}: {exc}") from exc
    return store, state, [str(dest)]
