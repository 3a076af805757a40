"""The outbox's seq floor, kept beside the database (``<outbox>.seqs``) so it outlives it.

A seq names a record to the cloud (batch ids, watermarks, delta sync), so a
device must never give one seq to two records.  The database keeps its own
counter, but a database that is quarantined, removed by hand or restored from
an older copy takes that counter with it, and a fresh one would count from 1
again: its batches would collide with those the cloud holds (a 409 holds the
stream for good) or, worse, delta sync would ack new records under seqs the
cloud already holds, deleting them unsent.  So every block of seqs is recorded
here, durably, before any of it is used, and an outbox never starts below it.

``renumbered``: the renumberings done, so that a seq kept elsewhere before one
(the appliance's raw frame index, a blob ref's meta) can be translated.

``unconfirmed_from``: the first seq the cloud has not yet been asked about.
Every start sets it (if not already set) to the first seq of the run: the
database may have been restored from an older copy, or lost with its disk, so
the cloud may already hold seqs the database thinks are new.  Until a handshake
confirms them (``Outbox.confirm_history``) nothing is sent.

The file is JSON, written with ``replace_durably``: whole or as it was.  A file
that cannot be read is logged and ignored (the database's own counter and the
handshake check remain), never a crash.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

from sync.shared.durable_file import replace_durably

__all__ = ["SeqFloor", "floor_path", "read_seq_floor", "write_seq_floor"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SeqFloor:
    seq_floor: int  # every seq ever handed out by an outbox at this path is below it
    unconfirmed_from: int | None  # first seq the cloud has not been asked about, if any
    shift: int | None = None  # a renumbering under way: [U, U+shift) moves up by shift
    renumbered: tuple[tuple[int, int], ...] = ()  # done ones, oldest first: (U, shift)


def floor_path(outbox_path: Path) -> Path:
    return outbox_path.with_name(outbox_path.name + ".seqs")


def read_seq_floor(outbox_path: Path) -> SeqFloor | None:
    """The recorded floor, or None when there is no (readable) file."""
    path = floor_path(outbox_path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        problem = str(exc)
    else:
        floor = _parse(raw)
        if isinstance(floor, SeqFloor):
            return floor
        problem = floor
    log.error("outbox seq floor %s unusable (%s); using the database's counter", path, problem)
    return None


def _parse(raw: bytes) -> SeqFloor | str:
    """The floor in ``raw``, or what is wrong with it."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        return f"not JSON: {exc}"
    if not isinstance(data, dict):
        return "not a JSON object"
    floor, unconfirmed, shift = (data.get(k) for k in ("seq_floor", "unconfirmed_from", "shift"))
    if not _seq(floor):
        return f"seq_floor {floor!r}"
    if unconfirmed is not None and not _seq(unconfirmed):
        return f"unconfirmed_from {unconfirmed!r}"
    if shift is not None and (unconfirmed is None or not _seq(shift)):
        return f"shift {shift!r} (unconfirmed_from {unconfirmed!r})"
    done = data.get("renumbered", [])
    if not isinstance(done, list) or not all(
        isinstance(d, list) and len(d) == 2 and _seq(d[0]) and _seq(d[1]) for d in done
    ):
        return f"renumbered {done!r}"
    return SeqFloor(floor, unconfirmed, shift, tuple((d[0], d[1]) for d in done))


def _seq(value: object) -> TypeGuard[int]:
    return type(value) is int and 1 <= value < 1 << 63


def write_seq_floor(outbox_path: Path, floor: SeqFloor) -> None:
    """Record ``floor`` durably; raises ``OSError`` (the old file is kept)."""
    data = {
        "seq_floor": floor.seq_floor,
        "unconfirmed_from": floor.unconfirmed_from,
        "shift": floor.shift,
        "renumbered": [list(d) for d in floor.renumbered],
    }
    replace_durably(floor_path(outbox_path), json.dumps(data).encode() + b"\n")
