"""Replacing a small file so that after a crash it is whole or as it was.

One helper for every small file that must survive a power cut: the sync
engine's state file, the outbox's seq floor, and the appliance's blobs and keys;
and the directory fsync that makes a rename or a new entry durable.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["TEMP_SUFFIX", "fsync_directory", "make_directory_durably", "replace_durably"]

TEMP_SUFFIX = ".tmp"  # of the temp file beside the target until its rename


def replace_durably(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path``: a temp file of its own in the same directory (two
    writers never share one), fsync, rename over ``path``, fsync the directory.
    ``mode`` (default: mkstemp's 0600) is set before the rename, so ``path`` never
    exists with the wrong mode.

    The temp file is ``.<name>.<random>.tmp``: hidden (Spark and pyarrow skip
    ``.``-names) and never matched by a ``*.<suffix>`` glob of the real files.

    Raises ``OSError`` (a full disk included: a short write is an error) with the
    temp file removed and ``path`` untouched; callers turn it into their typed error.
    """
    make_directory_durably(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:  # mkstemp makes it 0600; buffered: writes it all
            handle.write(data)
            handle.flush()
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


def make_directory_durably(directory: Path, mode: int = 0o777) -> None:
    """Create ``directory`` and its missing parents, each new one's entry fsync'd in its
    parent (a directory made by a plain mkdir may vanish at a power cut with all it
    holds).  ``OSError`` (``FileExistsError`` when a file has its name) when it cannot."""
    if directory.is_dir():
        return
    make_directory_durably(directory.parent)
    directory.mkdir(mode=mode, exist_ok=True)
    fsync_directory(directory.parent)


def fsync_directory(directory: Path) -> None:
    """Make the entries of ``directory`` durable (a rename or create in it survives a
    power cut once this returns).  ``OSError`` when it cannot."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
