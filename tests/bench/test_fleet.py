"""The fleet benchmark's quick variant: 100 appliances reconnect at once against two ingest
instances sharing a real PostgreSQL and a real S3 store; every request to a random instance.

The run itself checks every record in the lake exactly once, every blob byte-exact and no
5xx (``bench.fleet._check``); here also that the fleet drained and the numbers add up.
No timing is asserted (speed belongs to ``make bench``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.fleet import Load, run_fleet
from tests.support.postgres import PostgresServer
from tests.support.seaweed import SeaweedS3


@pytest.mark.timeout(400)  # ~40 s on a loaded 2-core machine; room for a much slower one
def test_a_hundred_appliances_drain_against_two_instances(
    tmp_path: Path, seaweed: SeaweedS3, postgres: PostgresServer
) -> None:
    load = Load(devices=100, deadline_s=240)
    result = run_fleet(2, load, tmp_path, seaweed, postgres)
    assert result.instances == 2
    assert result.records == 100 * load.events
    # per device: handshake, batch, and per blob HEAD + POST + two PATCHes (at least)
    assert result.requests >= 100 * (2 + 4 * load.blobs)
    assert sum(result.per_second) == result.requests
    assert sum(result.per_instance) == result.requests
    assert min(result.per_instance) > result.requests // 4  # no stickiness: both took requests
    assert result.statuses.get(201, 0) >= 100 * (1 + load.blobs), result.statuses  # batch, POSTs
    # every request asks the shared catalog at least once (its credential)
    assert result.db_transactions is not None
    assert result.db_transactions >= result.requests, (result.db_transactions, result.requests)
