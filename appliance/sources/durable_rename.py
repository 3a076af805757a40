"""Moving a spool file so that after a power cut it stays moved.

A rename changes two directories; until each is fsync'd, a power cut may bring
the old entry back (the file read again: its records stored twice) or lose the
new one.  ``rename_durably`` fsyncs the destination first, then the source: at
every moment the file is in at least one of the two.  A directory the move
creates has its own entry fsync'd in its parent.  (Writing a small file whole
is ``sync.shared.durable_file.replace_durably``.)
"""

from __future__ import annotations

import os
from pathlib import Path

from sync.shared.durable_file import fsync_directory, make_directory_durably

__all__ = ["fsync_directory", "make_directory_durably", "rename_durably"]


def rename_durably(source: Path, target: Path) -> None:
    """``os.replace(source, target)`` (same filesystem), then fsync the target's directory,
    then the source's.  ``OSError`` when the rename fails (nothing moved) or a directory
    cannot be synced (moved, but maybe not for good)."""
    os.replace(source, target)
    fsync_directory(target.parent)
    if source.parent != target.parent:
        fsync_directory(source.parent)
