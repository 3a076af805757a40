"""Fixtures shared by the sync tests: ``open_outbox`` (outbox tests), ``outbox`` (engine tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sync.outbox import Outbox
from sync.settings import OutboxSettings
from tests.support.outbox import OUTBOX, OpenOutbox


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    """An outbox at ``tmp_path/outbox`` with the engine tests' settings."""
    box = Outbox.open(tmp_path / "outbox", OUTBOX)
    yield box
    await box.close()


@pytest.fixture
async def open_outbox(tmp_path: Path) -> AsyncIterator[OpenOutbox]:
    """``open_outbox(settings=None, **open_kwargs)``: the outbox at ``tmp_path/outbox``
    (``min_free_disk_bytes`` 0 unless ``settings`` sets it; the test disk may be
    fuller than the default margin); every outbox opened is closed at the end."""
    opened: list[Outbox] = []

    def _open(settings: OutboxSettings | None = None, **kwargs: object) -> Outbox:
        base = {"min_free_disk_bytes": 0}
        if settings is not None:
            base |= settings.model_dump(exclude_unset=True)
        outbox = Outbox.open(tmp_path / "outbox", OutboxSettings(**base), **kwargs)  # type: ignore[arg-type]
        opened.append(outbox)
        return outbox

    yield _open
    for outbox in opened:
        await outbox.close()
