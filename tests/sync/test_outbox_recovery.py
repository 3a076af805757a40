"""Damaged databases are quarantined; a full disk gives a typed error and loses nothing."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.errors import OutboxCorrupted, OutboxDiskFull, OutboxStorageError
from sync.outbox import Outbox
from sync.protocol import Stream
from sync.settings import OutboxSettings

SMALL = OutboxSettings(min_free_disk_bytes=0, memory_budget_bytes=8 << 20)


async def _filled(path: Path, records: int = 3000, size: int = 1000) -> list[int]:
    """An outbox with enough data that RocksDB has flushed table files; returns seqs."""
    outbox = Outbox.open(path, SMALL)
    seqs: list[int] = []
    for _ in range(0, records, 500):
        seqs += await outbox.append_many(Stream.EVENTS, [os.urandom(size) for _i in range(500)])
    await outbox.close()
    return seqs


def _quarantine_dirs(path: Path) -> list[Path]:
    root = path.with_name(path.name + ".quarantine")
    return sorted(root.iterdir()) if root.exists() else []


async def _assert_quarantined_and_fresh(path: Path) -> None:
    outbox = Outbox.open(path, SMALL)
    try:
        stats = outbox.stats()
        assert len(stats.quarantined) == 1
        [moved] = _quarantine_dirs(path)
        assert stats.quarantined == [str(moved)]
        assert any(moved.iterdir()), "the damaged files are kept for inspection"
        assert outbox.read(Stream.EVENTS) == []
        seq = await outbox.append(Stream.CRITICAL, b"after quarantine")
        assert [r.seq for r in outbox.read(Stream.CRITICAL)] == [seq]
    finally:
        await outbox.close()
    reopened = Outbox.open(path, SMALL)  # the fresh database is healthy: no second quarantine
    try:
        assert reopened.stats().quarantined == []
        assert len(reopened.read(Stream.CRITICAL)) == 1
    finally:
        await reopened.close()


async def test_garbage_current_file_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "outbox"
    await _filled(path, records=500)
    (path / "CURRENT").write_bytes(b"\x00garbage\xff\n")
    await _assert_quarantined_and_fresh(path)


async def test_missing_current_file_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "outbox"
    await _filled(path, records=500)
    (path / "CURRENT").unlink()
    await _assert_quarantined_and_fresh(path)


async def test_damaged_manifest_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "outbox"
    await _filled(path, records=500)
    for manifest in path.glob("MANIFEST-*"):
        data = bytearray(manifest.read_bytes())
        data[: min(len(data), 64)] = os.urandom(min(len(data), 64))
        manifest.write_bytes(bytes(data))
    await _assert_quarantined_and_fresh(path)


async def test_damaged_table_file_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "outbox"
    await _filled(path)
    tables = sorted(path.glob("*.sst"))
    assert tables, "expected RocksDB to have flushed table files"
    for table in tables:
        with table.open("r+b") as f:  # the footer (magic number, index handle)
            f.seek(-48, os.SEEK_END)
            f.write(os.urandom(48))
    await _assert_quarantined_and_fresh(path)


async def test_corruption_found_while_reading_quarantines_at_next_start(tmp_path: Path) -> None:
    path = tmp_path / "outbox"
    await _filled(path)
    tables = [t for t in path.glob("*.sst") if t.stat().st_size > 100_000]
    assert tables, "expected RocksDB to have flushed large table files"
    for table in tables:
        size = table.stat().st_size
        with table.open("r+b") as f:  # data blocks in the middle; footer intact
            for offset in range(size // 4, size // 2, 4096):
                f.seek(offset)
                f.write(os.urandom(64))
    outbox = Outbox.open(path, SMALL)
    try:
        with pytest.raises(OutboxCorrupted):
            after = 0
            while records := outbox.read(Stream.EVENTS, after, max_records=500):
                after = records[-1].seq
    finally:
        await outbox.close()
    assert path.with_name("outbox.corrupt").exists()
    await _assert_quarantined_and_fresh(path)


async def test_database_in_use_is_not_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "outbox"
    outbox = Outbox.open(path, SMALL)
    try:
        seq = await outbox.append(Stream.EVENTS, b"held")
        with pytest.raises(OutboxStorageError):
            Outbox.open(path, SMALL)
        assert _quarantine_dirs(path) == []
        assert [r.seq for r in outbox.read(Stream.EVENTS)] == [seq]
    finally:
        await outbox.close()


async def test_free_space_guard_refuses_appends_without_losing_records(tmp_path: Path) -> None:
    path = tmp_path / "outbox"
    seqs = await _filled(path, records=500, size=100)
    huge = shutil.disk_usage(tmp_path).free * 10
    outbox = Outbox.open(path, OutboxSettings(min_free_disk_bytes=huge))
    try:
        with pytest.raises(OutboxDiskFull) as caught:
            await outbox.append(Stream.CRITICAL, b"no room")
        assert caught.value.retryable
        assert outbox.stats().rejections == {"disk_full": 1}
        assert len(outbox.read(Stream.EVENTS, max_records=1000)) == len(seqs)
    finally:
        await outbox.close()


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[tuple[Path, bool]]:
    """A 12 MiB tmpfs, for a real full disk (we run as root here).  Where mounting is
    not allowed, the plain temp dir and a free-space guard set 8 MiB above its free
    space stand in for it; the flag says which."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount_point)]
    mounted = subprocess.run(command, capture_output=True, check=False).returncode == 0
    yield mount_point, mounted
    if mounted:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill_remaining(path: Path) -> None:
    """Write ``path`` until the filesystem has no byte left."""
    with path.open("wb", buffering=0) as out:
        chunk = b"\0" * (64 << 10)
        while chunk:
            try:
                out.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk = chunk[: len(chunk) // 2]


async def test_full_disk_gives_typed_error_and_keeps_every_record(
    small_filesystem: tuple[Path, bool],
) -> None:
    root, mounted = small_filesystem
    path, ballast = root / "outbox", root / "ballast"
    ballast.write_bytes(b"\0" * (2 << 20))
    guard = 0 if mounted else shutil.disk_usage(root).free - (8 << 20)
    outbox = Outbox.open(path, SMALL.model_copy(update={"min_free_disk_bytes": guard}))
    acknowledged: list[int] = []
    try:
        with pytest.raises(OutboxDiskFull) as caught:
            for i in range(100_000):
                batch = [i.to_bytes(4, "big") + os.urandom(200) for _ in range(64)]
                acknowledged += await outbox.append_many(Stream.EVENTS, batch)
        assert caught.value.retryable
        assert len(acknowledged) > 1000
        assert outbox.stats().rejections["disk_full"] >= 64
        if mounted:  # the failed table file was removed: take what it had used as well
            _fill_remaining(root / "ballast-rest")
        with pytest.raises(OutboxDiskFull):  # still full: refused again, nothing breaks
            await outbox.append(Stream.CRITICAL, b"still no room")
        if mounted:
            ballast.unlink()  # the operator frees space: the same outbox recovers
            (root / "ballast-rest").unlink()
            later = await outbox.append(Stream.CRITICAL, b"after space was freed")
            assert later > acknowledged[-1]
            assert [r.payload for r in outbox.read(Stream.CRITICAL)] == [b"after space was freed"]
    finally:
        await outbox.close()
    outbox = Outbox.open(path, SMALL)
    try:
        assert outbox.stats().quarantined == []
        seen: list[int] = []
        while records := outbox.read(Stream.EVENTS, seen[-1] if seen else 0):
            seen += [r.seq for r in records]
        assert seen == acknowledged, "every acknowledged record, in order, exactly once"
    finally:
        await outbox.close()
