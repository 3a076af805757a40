"""Length and hash checks of an artifact, and a tar reader that cannot be tricked.

``ArtifactDigest`` is fed bytes as they arrive (download or disk) and refuses
the first byte past the declared size, so an endless stream is never read
further (endless-data attack).  ``extract_archive`` writes only regular files
listed in the signed file list, each checked for size and sha256 as it is
copied; ``..``, absolute paths, links and device files are refused.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sync.shared._signing_errors import (
    ArtifactTooLong,
    HashMismatch,
    SizeMismatch,
    UnsafeArchive,
)

__all__ = [
    "ArtifactDigest",
    "FileDigest",
    "digest_archive",
    "extract_archive",
    "safe_member_path",
    "verify_file",
]

_CHUNK = 1 << 20
MAX_MEMBERS = 10_000  # a release holds a few model files and golden cases


@dataclass(frozen=True)
class FileDigest:
    """A declared size and sha256 (hex)."""

    size: int
    sha256: str


class ArtifactDigest:
    """Size and sha256 of a stream checked against a declaration, chunk by chunk."""

    def __init__(self, declared: FileDigest, *, what: str = "artifact") -> None:
        self._declared = declared
        self._what = what
        self._hash = hashlib.sha256()
        self.received = 0

    def resume(self, prefix: BinaryIO) -> None:
        """Feed bytes already on disk (a partial download) before new ones."""
        while chunk := prefix.read(_CHUNK):
            self.feed(chunk)

    def feed(self, chunk: bytes) -> None:
        if self.received + len(chunk) > self._declared.size:
            raise ArtifactTooLong(
                f"{self._what}: more than the declared {self._declared.size} bytes; stopped reading"
            )
        self._hash.update(chunk)
        self.received += len(chunk)

    def finish(self) -> None:
        if self.received < self._declared.size:
            raise SizeMismatch(
                f"{self._what}: {self.received} bytes of the declared {self._declared.size}",
                short=True,
            )
        digest = self._hash.hexdigest()
        if digest != self._declared.sha256:
            raise HashMismatch(
                f"{self._what}: sha256 {digest} is not the signed {self._declared.sha256}"
            )


def verify_file(path: Path, declared: FileDigest, *, what: str | None = None) -> None:
    """Check a file on disk; reads at most one byte past the declared size."""
    digest = ArtifactDigest(declared, what=what or path.name)
    with path.open("rb") as handle:
        remaining = declared.size + 1
        while remaining > 0 and (chunk := handle.read(min(_CHUNK, remaining))):
            remaining -= len(chunk)
            digest.feed(chunk)
    digest.finish()


def safe_member_path(name: str) -> PurePosixPath:
    """A tar member name as a relative path that stays inside the target, else refuse."""
    path = PurePosixPath(name)
    if not name or "\\" in name or "\x00" in name:
        raise UnsafeArchive(f"member name {name!r} is not a plain relative path")
    if path.is_absolute():
        raise UnsafeArchive(f"member {name!r} has an absolute path")
    if any(part == ".." for part in path.parts):
        raise UnsafeArchive(f"member {name!r} climbs out with '..'")
    parts = [part for part in path.parts if part != "."]
    if not parts:
        raise UnsafeArchive(f"member name {name!r} is empty")
    return PurePosixPath(*parts)


def _member_kind_refusal(member: tarfile.TarInfo) -> str | None:
    if member.issym():
        return f"a symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"a hard link (to {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.isfifo():
        return "a FIFO"
    if not (member.isfile() or member.isdir()):
        return f"an entry of type {member.type!r}"
    return None


def extract_archive(
    archive: Path,
    target: Path,
    files: Mapping[str, FileDigest],
    *,
    on_file: Callable[[str], None] | None = None,
) -> list[PurePosixPath]:
    """Extract the regular files of an uncompressed tar into ``target``.

    Every member is checked before anything of it is written; every file must
    be in ``files`` (the signed list) with its size and sha256, and every listed
    file must be present.  Files are written 0644, never with the archive's
    owner or mode.  ``on_file`` is told each path once it is written (progress).
    Returns the relative paths written.
    """
    written: list[PurePosixPath] = []
    seen: set[str] = set()
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for index, member in enumerate(tar):
                if index >= MAX_MEMBERS:
                    raise UnsafeArchive(f"more than {MAX_MEMBERS} members")
                relative = safe_member_path(member.name)
                refusal = _member_kind_refusal(member)
                if refusal is not None:
                    raise UnsafeArchive(f"member {member.name!r} is {refusal}")
                if member.isdir():
                    continue
                key = relative.as_posix()
                if key in seen:
                    raise UnsafeArchive(f"member {key!r} appears twice")
                declared = files.get(key)
                if declared is None:
                    raise UnsafeArchive(f"member {key!r} is not in the signed file list")
                seen.add(key)
                _copy_checked(tar, member, target / key, declared, key)
                written.append(relative)
                if on_file is not None:
                    on_file(key)
    except tarfile.TarError as exc:
        raise UnsafeArchive(f"not a readable tar archive: {exc}") from exc
    missing = sorted(set(files) - seen)
    if missing:
        raise SizeMismatch(f"signed files missing from the archive: {', '.join(missing)}")
    return written


def digest_archive(archive: Path) -> dict[str, FileDigest]:
    """Size and sha256 of every regular file of a tar, refusing what ``extract_archive``
    refuses; what a signer lists in a manifest."""
    files: dict[str, FileDigest] = {}
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for index, member in enumerate(tar):
                if index >= MAX_MEMBERS:
                    raise UnsafeArchive(f"more than {MAX_MEMBERS} members")
                key = safe_member_path(member.name).as_posix()
                refusal = _member_kind_refusal(member)
                if refusal is not None:
                    raise UnsafeArchive(f"member {member.name!r} is {refusal}")
                if member.isdir():
                    continue
                if key in files:
                    raise UnsafeArchive(f"member {key!r} appears twice")
                source = tar.extractfile(member)
                if source is None:
                    raise UnsafeArchive(f"member {key!r} has no content")
                digest = hashlib.sha256()
                with source:
                    while chunk := source.read(_CHUNK):
                        digest.update(chunk)
                files[key] = FileDigest(size=member.size, sha256=digest.hexdigest())
    except tarfile.TarError as exc:
        raise UnsafeArchive(f"not a readable tar archive: {exc}") from exc
    return files


def _copy_checked(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    destination: Path,
    declared: FileDigest,
    name: str,
) -> None:
    if member.size != declared.size:
        raise SizeMismatch(f"{name}: {member.size} bytes in the archive, signed {declared.size}")
    source = tar.extractfile(member)
    if source is None:
        raise UnsafeArchive(f"member {name!r} has no content")
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = ArtifactDigest(declared, what=name)
    descriptor = os.open(
        destination,
        os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
        stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH,
    )
    with source, os.fdopen(descriptor, "wb") as out:
        while chunk := source.read(_CHUNK):
            digest.feed(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    digest.finish()
