"""Model files derived offline from the pinned ones, each vouched for by a record.

``make models`` (``yardlink models quantize DIR``) derives files from the models in
a directory, pinned or retrained (the INT8 detector, ``quantize.py``; the folded
files, ``model_fold.py``) and writes beside each a JSON record: its source's
sha256, the recipe, its own sha256 and the library versions.  A task, and the
release packager, uses a derived file only when that record names the sha256 of
the source file beside it, the recipe of this code and the file's own bytes, so
a stale, altered or half-written file, or one made from another source, is
never loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from appliance.inference.model_files import file_sha256
from sync.shared.durable_file import replace_durably

__all__ = ["recorded_sha256", "vouched_path", "write_derived"]


def _record(record_path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def recorded_sha256(record_path: Path) -> str | None:
    """The derived file's sha256 as its record states it (no hashing: for a file that
    ``vouched_path`` already checked against that record)."""
    record = _record(record_path)
    sha256 = None if record is None else record.get("sha256")
    return sha256 if isinstance(sha256, str) else None


def vouched_path(
    path: Path, record_path: Path, source: Path | None, recipe: dict[str, Any]
) -> Path | None:
    """``path`` if its record names the sha256 of ``source`` as it is now (None or
    missing: no trusted source, never vouched), ``recipe`` and the file's own sha256;
    else None."""
    record = _record(record_path) if path.is_file() else None
    if (
        record is None
        or source is None
        or record.get("recipe") != recipe
        or record.get("sha256") != file_sha256(path)
    ):
        return None
    source_sha256 = file_sha256(source)
    if source_sha256 is None or record.get("source_sha256") != source_sha256:
        return None
    return path


def write_derived(path: Path, record_path: Path, data: bytes, record: dict[str, Any]) -> Path:
    """Write the derived file, then its record (``record`` plus the file's sha256 and
    size): durably, the record last, so a record never vouches for a missing file."""
    replace_durably(path, data)
    full = {**record, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    replace_durably(record_path, (json.dumps(full, indent=2) + "\n").encode())
    return path
