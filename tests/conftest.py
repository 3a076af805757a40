"""Hypothesis profiles for the whole suite.

``make test`` (and so CI) runs the property tests derandomized: the same
examples every run, so a red CI always reproduces and a green one is not
luck. ``make fuzz`` runs the property tests with fresh random examples; whatever
it finds becomes a test of its own (see tests/cloud_ingest/data/).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

if TYPE_CHECKING:  # imported lazily: pyarrow stays out of tests that do not load it
    from tests.support.postgres import PostgresServer
    from tests.support.seaweed import SeaweedS3

settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One real S3 server (SeaweedFS) for the session, stopped after (tests/support/seaweed.py)."""
    from tests.support.seaweed import running_seaweed

    with running_seaweed(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session, stopped after (tests/support/postgres.py)."""
    from tests.support.postgres import running_postgres

    with running_postgres() as server:
        yield server
