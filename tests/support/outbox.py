"""Outbox settings and types shared by the sync tests."""

from __future__ import annotations

from collections.abc import Callable

from sync.outbox import Outbox
from sync.settings import OutboxSettings

__all__ = ["OUTBOX", "OpenOutbox"]

# the engine tests' outbox: no free-disk margin (the test disk may be fuller), 8 MiB memory
OUTBOX = OutboxSettings(min_free_disk_bytes=0, memory_budget_bytes=8 << 20)

# the ``open_outbox`` fixture (tests/sync/conftest.py): settings=None, **open kwargs -> Outbox
OpenOutbox = Callable[..., Outbox]
