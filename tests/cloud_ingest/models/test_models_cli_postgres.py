"""``yardlink ingest models ...`` on a shared PostgreSQL catalog (``--catalog``): the release
and the rollout land in PostgreSQL, where every instance reads them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.support.model_registry import Kit
from tests.support.postgres import PostgresServer

YARDLINK = str(Path(sys.executable).parent / "yardlink")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [YARDLINK, *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
async def catalog_url(postgres: PostgresServer) -> AsyncIterator[str]:
    url = await postgres.create_database()
    try:
        yield url
    finally:
        await postgres.drop_database(url)


async def test_publish_and_start_a_rollout_on_postgresql(
    tmp_path: Path, kit: Kit, catalog_url: str
) -> None:
    manifest = tmp_path / "release.manifest.json"
    manifest.write_bytes(kit.signed)
    where = ["--data-dir", str(tmp_path / "data"), "--catalog", catalog_url]
    published = _run(
        "ingest", "models", "publish", str(kit.build.archive), "--manifest", str(manifest),
        "--keyring", str(kit.keyring_file), *where,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    version = kit.manifest.version
    started = _run("ingest", "models", "rollout", "start", "gate-ocr", version, *where, "--json")
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["phase"] == "canary"
    again = _run("ingest", "models", "rollout", "start", "gate-ocr", version, *where)
    assert again.returncode != 0 and "is rolling out; abort it first" in again.stderr, again.stderr
    assert not (tmp_path / "data" / "catalog.db").exists()  # nothing went to SQLite
    conn = await asyncpg.connect(catalog_url)
    try:
        releases = await conn.fetch("SELECT name, version, counter FROM model_releases")
        audit = await conn.fetch("SELECT actor, action FROM audit_log ORDER BY event_id")
    finally:
        await conn.close()
    assert [tuple(r) for r in releases] == [("gate-ocr", version, 2)]
    assert [tuple(r) for r in audit] == [("cli", "model.publish"), ("cli", "rollout.start")]
