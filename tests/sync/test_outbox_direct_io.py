"""Flushes and compactions bypass the page cache where the filesystem allows it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from sync.outbox import Outbox
from sync.outbox.options import direct_io_works
from sync.protocol import Stream
from sync.settings import OutboxSettings


def direct_io_option(database: Path) -> str:
    """What RocksDB's LOG says it opened with."""
    for line in (database / "LOG").read_text().splitlines():
        if "Options.use_direct_io_for_flush_and_compaction:" in line:
            return line.rsplit(":", 1)[1].strip()
    raise AssertionError("option not in the LOG")


async def test_on_a_filesystem_with_o_direct_flushes_bypass_the_page_cache(
    tmp_path: Path,
) -> None:
    assert direct_io_works(tmp_path)  # ext4 / tmpfs on the test machines
    outbox = Outbox.open(tmp_path / "outbox", OutboxSettings(min_free_disk_bytes=0))
    try:
        await outbox.append(Stream.EVENTS, b"x")
    finally:
        await outbox.close()
    assert direct_io_option(tmp_path / "outbox") == "1"
    assert not list(tmp_path.glob("**/.direct-io-probe-*"))  # the probe leaves nothing


async def test_without_o_direct_the_outbox_opens_buffered_and_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filesystem that refuses O_DIRECT (some FUSE mounts, older tmpfs): the probe
    says so before RocksDB could fail its first flush, and the outbox runs buffered."""
    real_open = os.open

    def refuse_o_direct(path: str | Path, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument", str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", refuse_o_direct)
    assert not direct_io_works(tmp_path)
    settings = OutboxSettings(min_free_disk_bytes=0, memory_budget_bytes=8 << 20)
    outbox = Outbox.open(tmp_path / "outbox", settings)
    try:
        # more than a memtable (1 MB of the 8 MB budget): at least one flush runs
        seqs = await outbox.append_many(Stream.EVENTS, [os.urandom(1000)] * 3000)
    finally:
        await outbox.close()
    monkeypatch.undo()
    assert direct_io_option(tmp_path / "outbox") == "0"
    assert list((tmp_path / "outbox").glob("*.sst"))  # flushed, buffered
    reopened = Outbox.open(tmp_path / "outbox", settings)
    try:
        assert len(reopened.read(Stream.EVENTS, max_records=5000)) == len(seqs)
    finally:
        await reopened.close()


def test_a_missing_directory_is_no_direct_io(tmp_path: Path) -> None:
    assert not direct_io_works(tmp_path / "missing")
