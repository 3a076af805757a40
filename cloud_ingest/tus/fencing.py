"""Fencing of tus writers across instances: leases, their generations, committed parts.

Kept apart from ``state_postgres.py`` (which needs asyncpg) so the chunk code can
name them in any deployment.  The lease a request holds is a context variable,
set for the block of :meth:`PostgresUploadState.lease`, so the code that stores
a part can commit it under that lease's generation (its fencing token).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from cloud_ingest.errors import Conflict

__all__ = [
    "Lease",
    "LeaseLost",
    "PartRow",
    "held_lease",
    "holding",
    "remember_row",
    "seen_row",
    "update_row",
]


class LeaseLost(Conflict):
    """A part came from a writer whose lease ran out and was taken: refused (HEAD, resume)."""

    error, retryable = "lease_lost", True


@dataclass(frozen=True, slots=True)
class Lease:
    """A held lease: its token, and its generation (the fencing token of its parts)."""

    token: str
    generation: int


@dataclass(frozen=True, slots=True)
class PartRow:
    """The committed parts of an upload: their keys in byte order and their end."""

    offset: int
    keys: tuple[str, ...]
    assembled: bool  # the parts were joined into the blob (and are gone)


# the lease the current request holds (set for the block of PostgresUploadState.lease)
_HELD: ContextVar[Lease | None] = ContextVar("yardlink_tus_lease", default=None)


def held_lease() -> Lease | None:
    """The lease the running request holds on its upload, if any."""
    return _HELD.get()


@contextlib.contextmanager
def holding(lease: Lease | None) -> Iterator[None]:
    """Run the block as the holder of ``lease`` (what :meth:`PostgresUploadState.lease` does)."""
    reset = _HELD.set(lease)
    try:
        yield
    finally:
        _HELD.reset(reset)


# The upload rows this request read last (set by PostgresUploadState.get, kept up to
# date by its own commits): the blocking chunk code on a worker thread answers offset
# and parts from here instead of asking the database again.  The routes load an upload
# before they touch its bytes, and a load under the lease is authoritative.
_SEEN: ContextVar[dict[str, PartRow | None] | None] = ContextVar("yardlink_tus_rows", default=None)


def remember_row(upload_id: str, row: PartRow | None) -> None:
    """What a load of the upload's row found: the request's view from now on."""
    _SEEN.set({upload_id: row})


def update_row(upload_id: str, row: PartRow | None) -> None:
    """What this request changed in a row it has seen (a commit, the assembly, a delete)."""
    seen = _SEEN.get()
    if seen is not None and upload_id in seen:
        seen[upload_id] = row  # one dict shared with the worker threads' copied contexts


def seen_row(upload_id: str) -> tuple[bool, PartRow | None]:
    """(True, row) when this request has seen the upload's row, else (False, None)."""
    seen = _SEEN.get()
    if seen is None or upload_id not in seen:
        return False, None
    return True, seen[upload_id]
