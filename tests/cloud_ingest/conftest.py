"""Fixtures for the ingest service: a real server on a loopback port, real SQLite in tmp_path.

The service and batch helpers themselves are in tests/support/ingest.py (import them from there).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloud_ingest.settings import IngestSettings
from tests.cloud_ingest.catalog_backends import catalog, catalog_backend
from tests.support.ingest import Ingest, running_ingest

__all__ = ["catalog", "catalog_backend"]  # the fixtures of the one catalog suite, both backends


@pytest.fixture
def settings(tmp_path: Path) -> IngestSettings:
    return IngestSettings(data_dir=tmp_path / "data", sweep_interval_s=3600)


@pytest.fixture
async def ingest(settings: IngestSettings) -> AsyncIterator[Ingest]:
    async with running_ingest(settings) as running:
        yield running


@pytest.fixture
async def fuzz_ingest(ingest: Ingest) -> tuple[Ingest, dict[str, str]]:
    """One service with a device, a second device and an operator, shared by fuzz examples."""
    tokens = {
        "device": await ingest.device("gate-01"),
        "other-device": await ingest.device("gate-02", "yard-b"),
        "operator": await ingest.operator(),
    }
    return ingest, tokens
