"""LazyFS in Python: a FUSE passthrough that can lose what a power cut would lose.

Every operation goes through to ``<state>/tree`` at once; ``VolatileState`` keeps
what it needs to undo whatever no fsync (of the file) or fsyncdir (of the
directory) has made durable. Writing ``cut`` to ``/.powercut`` in the mount rolls
the tree back (``volatile``); reading it gives what the last cut threw away.
The test then unmounts and mounts again, so no kernel cache outlives the cut.

O_DIRECT opens are accepted and behave as ordinary unsynced writes (O_DIRECT
skips the page cache, not the disk's cache: it makes nothing durable).
``fallocate`` mode 0 (plain preallocation) is supported; other modes (punch hole,
keep size, zero range) are refused with EOPNOTSUPP.

Run: ``python -m tests.support.powercut.lazyfs STATE_DIR MOUNTPOINT --seed N``
(foreground, single-threaded; ``fusermount3 -u MOUNTPOINT`` ends it).
"""

from __future__ import annotations

import argparse
import errno
import os
import random
from pathlib import Path
from typing import Any

import mfusepy as fuse

from tests.support.powercut.volatile import CutReport, VolatileState

__all__ = ["CONTROL", "LazyFS"]

CONTROL = "/.powercut"
_CONTROL_FH = 2**31 - 1
_STAT_KEYS = (
    "st_ino",
    "st_mode",
    "st_nlink",
    "st_uid",
    "st_gid",
    "st_size",
    "st_blocks",
    "st_blksize",
)
_FALLOC_PLAIN = 0
_NOT_PASSED = os.O_DIRECT | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_TRUNC


def _backing_flags(flags: int) -> int:
    """Flags for the backing file: read-write whenever writing (the ledger reads the
    pages a write replaces); the kernel already resolved O_APPEND's offset."""
    if flags & os.O_ACCMODE == os.O_WRONLY:
        flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
    return flags & ~_NOT_PASSED


class LazyFS(fuse.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, state_dir: Path, seed: int) -> None:
        self.root = state_dir / "tree"
        self.root.mkdir(parents=True, exist_ok=True)
        self.state = VolatileState(self.root, state_dir / "graveyard", random.Random(seed))
        self.last_cut = CutReport()
        self.cuts = 0

    def _real(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    # -- metadata

    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        if path == CONTROL:
            return {"st_mode": 0o100600, "st_nlink": 1, "st_size": 0}
        try:
            st = os.lstat(self._real(path))
        except OSError as exc:
            raise fuse.FuseOSError(exc.errno) from None
        attrs: dict[str, Any] = {key: getattr(st, key) for key in _STAT_KEYS}
        attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        return attrs

    def readdir(self, path: str, fh: int) -> list[str | tuple[str, dict[str, int], int]]:
        """Names with their backing inode (an entry with inode 0 is skipped by readdir(3))."""
        entries: list[str | tuple[str, dict[str, int], int]] = [".", ".."]
        with os.scandir(self._real(path)) as found:
            for entry in found:
                st = entry.stat(follow_symlinks=False)
                entries.append((entry.name, {"st_ino": st.st_ino, "st_mode": st.st_mode}, 0))
        return entries

    def readlink(self, path: str) -> str:
        return os.readlink(self._real(path))

    def statfs(self, path: str) -> dict[str, int]:
        sv = os.statvfs(self.root)
        keys = (
            "f_bavail",
            "f_bfree",
            "f_blocks",
            "f_bsize",
            "f_favail",
            "f_ffree",
            "f_files",
            "f_frsize",
        )
        return {key: getattr(sv, key) for key in keys} | {"f_namemax": 255}

    def access(self, path: str, amode: int) -> int:
        if path != CONTROL and not os.access(self._real(path), amode):
            raise fuse.FuseOSError(errno.EACCES)
        return 0

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._real(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._real(path), uid, gid, follow_symlinks=False)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        os.utime(self._real(path), ns=times, follow_symlinks=False)
        return 0

    # -- namespace: each change first records the directory's durable listing

    def _dir_change(self, *paths: str) -> None:
        for path in paths:
            self.state.before_dir_change(self._real(path).parent)

    def mkdir(self, path: str, mode: int) -> int:
        self._dir_change(path)
        os.mkdir(self._real(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        self._dir_change(path)
        os.rmdir(self._real(path))
        return 0

    def unlink(self, path: str) -> int:
        self._dir_change(path)
        self.state.before_name_removed(self._real(path))
        os.unlink(self._real(path))
        return 0

    def rename(self, old: str, new: str) -> int:
        self._dir_change(old, new)
        self.state.before_name_removed(self._real(new))
        os.rename(self._real(old), self._real(new))
        return 0

    def symlink(self, target: str, source: str) -> int:
        self._dir_change(target)
        os.symlink(source, self._real(target))
        return 0

    def link(self, target: str, source: str) -> int:
        self._dir_change(target)
        os.link(self._real(source), self._real(target))
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        self.state.synced_dir(self._real(path))
        return 0

    # -- files

    def create(self, path: str, mode: int, fi: Any) -> int:
        real = self._real(path)
        existed = real.exists()
        self._dir_change(path)
        fd = os.open(real, _backing_flags(fi.flags) | os.O_CREAT, mode)
        if not existed:
            self.state.created_file(os.fstat(fd).st_ino)
        elif fi.flags & os.O_TRUNC:
            self.state.before_truncate(fd, 0)
            os.ftruncate(fd, 0)
        fi.fh = fd
        return 0

    def open(self, path: str, fi: Any) -> int:
        if path == CONTROL:
            fi.fh = _CONTROL_FH
            fi.direct_io = 1
            return 0
        fd = os.open(self._real(path), _backing_flags(fi.flags))
        if fi.flags & os.O_TRUNC:
            self.state.before_truncate(fd, 0)
            os.ftruncate(fd, 0)
        fi.fh = fd
        return 0

    def read(self, path: str, size: int, offset: int, fi: Any) -> bytes:
        if fi.fh == _CONTROL_FH:
            text = f"cuts={self.cuts} {self.last_cut.as_text()}".encode()
            return text[offset : offset + size]
        return os.pread(fi.fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fi: Any) -> int:
        if fi.fh == _CONTROL_FH:
            return self._control(data)
        self.state.before_write(fi.fh, offset, len(data))
        return os.pwrite(fi.fh, data, offset)

    def truncate(self, path: str, length: int, fi: Any = None) -> int:
        if fi is not None:
            self.state.before_truncate(fi.fh, length)
            os.ftruncate(fi.fh, length)
            return 0
        fd = os.open(self._real(path), os.O_RDWR)
        try:
            self.state.before_truncate(fd, length)
            os.ftruncate(fd, length)
        finally:
            os.close(fd)
        return 0

    def fallocate(self, path: str, mode: int, offset: int, size: int, fi: Any) -> int:
        if mode != _FALLOC_PLAIN:
            raise fuse.FuseOSError(errno.EOPNOTSUPP)
        self.state.before_truncate(fi.fh, offset + size)
        os.posix_fallocate(fi.fh, offset, size)
        return 0

    def fsync(self, path: str, datasync: int, fi: Any) -> int:
        self.state.synced_file(fi.fh)
        return 0

    def flush(self, path: str, fi: Any) -> int:
        return 0

    def release(self, path: str, fi: Any) -> int:
        if fi.fh != _CONTROL_FH:
            os.close(fi.fh)
        return 0

    def _control(self, data: bytes) -> int:
        command = data.decode(errors="replace").strip()
        if command != "cut":
            raise fuse.FuseOSError(errno.EINVAL)
        self.last_cut = self.state.cut()
        self.cuts += 1
        return len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    fuse.FUSE(
        LazyFS(args.state_dir, args.seed),
        str(args.mountpoint),
        raw_fi=True,
        foreground=True,
        nothreads=True,
        use_ino=True,  # the backing inode numbers: stable across a remount, as on a disk
        fsname="powercut",
    )


if __name__ == "__main__":
    main()
