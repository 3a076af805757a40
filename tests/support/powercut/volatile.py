"""What a power cut would lose: the writes and directory entries not yet made durable.

The filesystem writes through to its backing directory at once (so reads are
plain), and this ledger remembers, for every change not yet made durable, how to
undo it:

* file data, by inode: the file's size at its last fsync and the old bytes of
  every 4 KiB page overwritten since (appends need nothing saved);
* directory entries, by directory inode: the listing (name -> inode) the
  directory had at its last fsync. A file whose name is removed while an older
  listing may still want it back is hard-linked into the ``graveyard`` first.

``cut`` rolls the backing directory back to what a disk would hold after losing
power: each dirty directory gets its durable listing back (unsynced creates,
renames and unlinks undone), and each dirty file keeps its new bytes only up to
a random 4 KiB boundary (none, some prefix, or all), the rest restored to the
durable bytes and the size to what that leaves.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PAGE", "CutReport", "VolatileState"]

PAGE = 4096


@dataclass
class DirtyFile:
    """A file's data since its last fsync: the durable size and the overwritten pages."""

    durable_size: int
    old_pages: dict[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    ino: int
    is_dir: bool


@dataclass
class CutReport:
    """What one cut threw away (so a test can see the cut did something)."""

    files_rolled_back: int = 0
    bytes_lost: int = 0
    entries_undone: int = 0

    def as_text(self) -> str:
        lost = f"bytes={self.bytes_lost} entries={self.entries_undone}"
        return f"files={self.files_rolled_back} {lost}\n"


def _listing(directory: Path) -> dict[str, Entry]:
    with os.scandir(directory) as entries:
        return {e.name: Entry(e.inode(), e.is_dir(follow_symlinks=False)) for e in entries}


class VolatileState:
    """The undo ledger over ``root`` (the tree the mount shows); ``graveyard`` is a
    directory on the same filesystem, outside ``root``, for names removed too early."""

    def __init__(self, root: Path, graveyard: Path, rng: random.Random) -> None:
        self.root = root
        self.graveyard = graveyard
        self.rng = rng
        self.files: dict[int, DirtyFile] = {}
        self.dirs: dict[int, dict[str, Entry]] = {}
        graveyard.mkdir(parents=True, exist_ok=True)

    # -- recording, called by the filesystem *before* it changes the backing tree

    def before_write(self, fd: int, offset: int, length: int) -> None:
        """Save the durable bytes of the pages a write at ``offset`` will overwrite."""
        st = os.fstat(fd)
        dirty = self.files.setdefault(st.st_ino, DirtyFile(st.st_size))
        first = offset // PAGE
        last = (offset + max(length, 1) - 1) // PAGE
        for page in range(first, last + 1):
            if page * PAGE >= dirty.durable_size or page in dirty.old_pages:
                continue
            dirty.old_pages[page] = os.pread(fd, PAGE, page * PAGE)

    def before_truncate(self, fd: int, length: int) -> None:
        st = os.fstat(fd)
        if length < st.st_size:
            self.before_write(fd, length, st.st_size - length)
        else:
            self.files.setdefault(st.st_ino, DirtyFile(st.st_size))

    def created_file(self, ino: int) -> None:
        """A new file: nothing of its data is durable."""
        self.files[ino] = DirtyFile(0)

    def before_dir_change(self, directory: Path) -> None:
        """Remember ``directory``'s durable listing before its first unsynced change."""
        ino = directory.stat().st_ino
        if ino not in self.dirs:
            self.dirs[ino] = _listing(directory)

    def before_name_removed(self, path: Path) -> None:
        """Keep the inode behind ``path`` reachable, in case the cut brings the name back."""
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            return  # only empty directories are removed; the cut recreates them
        keep = self.graveyard / str(st.st_ino)
        if not keep.exists():
            os.link(path, keep, follow_symlinks=False)

    # -- making durable

    def synced_file(self, fd: int) -> None:
        self.files.pop(os.fstat(fd).st_ino, None)

    def synced_dir(self, directory: Path) -> None:
        self.dirs.pop(directory.stat().st_ino, None)

    # -- the cut

    def cut(self) -> CutReport:
        report = CutReport()
        self._restore_directories(report)
        where = self._inode_paths(include_graveyard=False)
        for ino, dirty in self.files.items():
            path = where.get(ino)
            if path is not None and path.is_file():
                report.bytes_lost += self._roll_back(path, dirty)
                report.files_rolled_back += 1
        self.files.clear()
        self.dirs.clear()
        shutil.rmtree(self.graveyard)
        self.graveyard.mkdir()
        return report

    def _roll_back(self, path: Path, dirty: DirtyFile) -> int:
        """Keep the new bytes below a random page boundary; durable bytes above it."""
        size = path.stat().st_size
        choice = self.rng.random()
        if choice < 0.4:
            keep = 0  # everything since the fsync lost
        elif choice < 0.6:
            keep = size  # it all happened to reach the platter
        else:
            keep = self.rng.randint(0, -(-size // PAGE)) * PAGE  # torn at a page
        with path.open("r+b") as f:
            for page, old in sorted(dirty.old_pages.items()):
                if page * PAGE >= keep:
                    f.seek(page * PAGE)
                    f.write(old)
            final = dirty.durable_size if keep == 0 else max(dirty.durable_size, min(keep, size))
            f.truncate(final)
        return abs(size - final) + sum(
            len(o) for p, o in dirty.old_pages.items() if p * PAGE >= keep
        )

    def _inode_paths(self, *, include_graveyard: bool) -> dict[int, Path]:
        found: dict[int, Path] = {}
        tops = [self.root, self.graveyard] if include_graveyard else [self.root]
        for top in tops:
            for dirpath, dirnames, filenames in os.walk(top):
                for name in dirnames + filenames:
                    path = Path(dirpath) / name
                    found.setdefault(path.lstat().st_ino, path)
            found.setdefault(top.stat().st_ino, top)
        return found

    def _restore_directories(self, report: CutReport) -> None:
        pending = dict(self.dirs)
        recreated: dict[int, Path] = {}  # old inode of a removed directory -> its new path
        while pending:
            where = self._inode_paths(include_graveyard=True)
            where.update(recreated)
            ready = [ino for ino in pending if ino in where and not self._parked(where[ino])]
            if not ready:
                break  # directories whose parent never durably held them: gone with the cut
            ino = min(ready, key=lambda i: len(where[i].parts))
            report.entries_undone += self._restore_listing(
                where[ino], pending.pop(ino), where, recreated
            )

    def _parked(self, path: Path) -> bool:
        return self.graveyard in path.parents or path == self.graveyard

    def _restore_listing(
        self,
        directory: Path,
        durable: dict[str, Entry],
        where: dict[int, Path],
        recreated: dict[int, Path],
    ) -> int:
        undone = 0
        for name, now in _listing(directory).items():
            if durable.get(name) != now:
                parked = self.graveyard / f"parked-{now.ino}-{name}"
                os.rename(directory / name, parked)
                where[now.ino] = parked
                undone += 1
        for name, entry in durable.items():
            target = directory / name
            if target.exists() or target.is_symlink():
                continue
            undone += 1
            source = where.get(entry.ino)
            if entry.is_dir:
                if source is not None and source.is_dir():
                    os.rename(source, target)
                else:
                    target.mkdir()
                    recreated[entry.ino] = target
            elif source is not None:
                os.link(source, target, follow_symlinks=False)
            else:
                raise RuntimeError(f"powercut: inode {entry.ino} of {target} was not kept")
        return undone
