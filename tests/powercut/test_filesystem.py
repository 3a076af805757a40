"""The power-cut filesystem itself: unsynced data and entries go, synced ones stay."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import pytest

from tests.support.powercut.mount import PowercutDisk
from tests.support.powercut.volatile import PAGE


def _write(path: Path, data: bytes, *, sync: bool, flags: int = 0) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _after_cut(disk: PowercutDisk) -> Path:
    disk.cut()
    return disk.mount()


def test_synced_file_and_entry_survive(disk: PowercutDisk) -> None:
    mnt = disk.mountpoint
    _write(mnt / "kept", b"k" * 10_000, sync=True)
    _fsync_dir(mnt)
    mnt = _after_cut(disk)
    assert (mnt / "kept").read_bytes() == b"k" * 10_000


def test_unsynced_entry_is_gone(disk: PowercutDisk) -> None:
    mnt = disk.mountpoint
    _write(mnt / "new", b"data", sync=True)  # data synced, but not the directory
    mnt = _after_cut(disk)
    assert not (mnt / "new").exists()


def test_unsynced_data_is_lost_or_torn_at_a_page(disk: PowercutDisk) -> None:
    """Across cuts the unsynced tail is lost, torn at a 4 KiB boundary, or kept;
    never anything else, and the synced head is always there."""
    mnt = disk.mountpoint
    head = b"h" * 5000
    _write(mnt / "f", head, sync=True)
    _fsync_dir(mnt)
    outcomes = set()
    for _ in range(12):
        tail = os.urandom(3 * PAGE + 100)
        with (mnt / "f").open("r+b") as f:
            f.seek(len(head))
            f.write(tail)
        mnt = _after_cut(disk)
        got = (mnt / "f").read_bytes()
        assert got[: len(head)] == head
        kept = got[len(head) :]
        assert kept == tail[: len(kept)]
        assert len(got) in (len(head), len(head) + len(tail)) or len(got) % PAGE == 0
        outcomes.add("lost" if not kept else "whole" if kept == tail else "torn")
        with (mnt / "f").open("r+b") as f:
            f.truncate(len(head))
            os.fsync(f.fileno())
    assert outcomes == {"lost", "torn", "whole"}


def test_overwrite_without_fsync_restores_old_bytes(disk: PowercutDisk) -> None:
    mnt = disk.mountpoint
    _write(mnt / "f", b"a" * (2 * PAGE), sync=True)
    _fsync_dir(mnt)
    for _ in range(6):
        with (mnt / "f").open("r+b") as f:
            f.write(b"b" * (2 * PAGE))
        mnt = _after_cut(disk)
        got = (mnt / "f").read_bytes()
        assert got in (b"a" * 2 * PAGE, b"b" * PAGE + b"a" * PAGE, b"b" * 2 * PAGE)
        _write(mnt / "f", b"a" * (2 * PAGE), sync=True)


def test_rename_without_dir_fsync_is_undone(disk: PowercutDisk) -> None:
    mnt = disk.mountpoint
    _write(mnt / "old", b"1", sync=True)
    _write(mnt / "tmp", b"2", sync=True)
    _fsync_dir(mnt)
    os.replace(mnt / "tmp", mnt / "old")
    mnt = _after_cut(disk)
    assert (mnt / "old").read_bytes() == b"1"
    assert (mnt / "tmp").read_bytes() == b"2"


def test_rename_with_dir_fsync_is_kept(disk: PowercutDisk) -> None:
    mnt = disk.mountpoint
    _write(mnt / "old", b"1", sync=True)
    _write(mnt / "tmp", b"2", sync=True)
    _fsync_dir(mnt)
    os.replace(mnt / "tmp", mnt / "old")
    _fsync_dir(mnt)
    mnt = _after_cut(disk)
    assert (mnt / "old").read_bytes() == b"2"
    assert not (mnt / "tmp").exists()


def test_unlink_and_subdirectory_undone_without_fsync(disk: PowercutDisk) -> None:
    mnt = disk.mountpoint
    _write(mnt / "gone", b"still here", sync=True)
    _fsync_dir(mnt)
    os.unlink(mnt / "gone")
    (mnt / "sub").mkdir()
    _write(mnt / "sub" / "x", b"x", sync=True)
    _fsync_dir(mnt / "sub")  # the child is durable in sub, but sub is not in the root
    mnt = _after_cut(disk)
    assert (mnt / "gone").read_bytes() == b"still here"
    assert not (mnt / "sub").exists()


def test_o_direct_writes_are_accepted_and_not_durable(disk: PowercutDisk) -> None:
    """O_DIRECT opens work (the outbox probes them) and make nothing durable by themselves."""
    mnt = disk.mountpoint
    _write(mnt / "d", b"", sync=True)
    _fsync_dir(mnt)
    try:
        fd = os.open(mnt / "d", os.O_WRONLY | os.O_DIRECT)
    except OSError as exc:  # a clear refusal is acceptable too
        assert exc.errno == errno.EINVAL
        return
    os.close(fd)
    _write(mnt / "d", b"z" * PAGE, sync=False, flags=os.O_DIRECT)
    assert (mnt / "d").read_bytes() == b"z" * PAGE
    mnt = _after_cut(disk)
    assert (mnt / "d").read_bytes() in (b"", b"z" * PAGE)


def test_fallocate_plain_works_other_modes_refused(disk: PowercutDisk) -> None:
    mnt = disk.mountpoint
    _write(mnt / "p", b"", sync=True)
    fd = os.open(mnt / "p", os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, 3 * PAGE)
        assert os.fstat(fd).st_size == 3 * PAGE
        punch_hole = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
        with pytest.raises(OSError) as refused:
            _fallocate(fd, punch_hole, 0, PAGE)
        assert refused.value.errno == errno.EOPNOTSUPP
    finally:
        os.close(fd)


def _fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.fallocate(fd, mode, ctypes.c_long(offset), ctypes.c_long(length))
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def test_posix_locks_work(disk: PowercutDisk) -> None:
    """RocksDB locks its LOCK file; the kernel handles it on the mount."""
    with (disk.mountpoint / "LOCK").open("wb") as f:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_inode_numbers_survive_a_remount(disk: PowercutDisk) -> None:
    """As on a disk: the spool's receipts name a file by its inode."""
    mnt = disk.mountpoint
    _write(mnt / "f", b"1", sync=True)
    _fsync_dir(mnt)
    before = (mnt / "f").stat().st_ino
    mnt = _after_cut(disk)
    assert (mnt / "f").stat().st_ino == before == (disk.state_dir / "tree" / "f").stat().st_ino
    assert [(e.name, e.inode()) for e in os.scandir(mnt)] == [("f", before)]
