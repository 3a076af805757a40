"""Fixtures shared by the appliance tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sync.outbox import Outbox
from tests.support.outbox import outbox_at


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    """A real outbox at ``tmp_path/outbox`` (``outbox_at``), closed after the test."""
    box = outbox_at(tmp_path)
    yield box
    await box.close()
