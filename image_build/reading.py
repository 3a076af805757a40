"""Reading a bundle as a stream and checking every byte against its signed manifest.

``walk_bundle`` decompresses and reads the tar once, in order, without seeking:
the first member must be the manifest (verified by the caller's ``trust``
before any other member is read), every other member must be a regular file
listed in it with its size and sha256, none twice, none missing, and the zstd
frame must end exactly at the end of the file (a truncated bundle is refused
even when the cut falls after the last member).  Each member's bytes go to a
sink the caller chooses: nothing (verify) or a file (install).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

import zstandard

from image_build.errors import BundleRefused
from image_build.manifest import MANIFEST_MEMBER, BundleManifest
from sync.shared.signing import MAX_ENVELOPE_BYTES, ArtifactDigest, VerificationError

__all__ = ["MemberSink", "ZstdFrameReader", "walk_bundle"]

_CHUNK = 1 << 16
_MAX_MEMBERS = 2_000


class ZstdFrameReader(io.RawIOBase):
    """One zstd frame read from a file; refuses a frame cut short or trailing bytes."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._decoder = zstandard.ZstdDecompressor().decompressobj()
        self._pending = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending and not self._done:
            chunk = self._raw.read(_CHUNK)
            if not chunk:
                if not self._decoder.eof:
                    raise BundleRefused("truncated", "the compressed stream ends inside its frame")
                self._done = True
                break
            if self._decoder.eof:
                raise BundleRefused("trailing_data", "bytes after the end of the bundle")
            try:
                self._pending = self._decoder.decompress(chunk)
            except zstandard.ZstdError as exc:
                raise BundleRefused("corrupt", f"the compressed stream is damaged: {exc}") from exc
            if self._decoder.eof and self._decoder.unused_data:
                raise BundleRefused("trailing_data", "bytes after the end of the bundle")
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def drain(self) -> None:
        """Read to the end (tar padding included), so the frame end is checked."""
        while self.read(_CHUNK):
            pass


class MemberSink(Protocol):
    def write(self, data: bytes) -> object: ...


SinkFactory = Callable[[str], MemberSink | None]
Trust = Callable[[bytes], BundleManifest]


def walk_bundle(path: Path, trust: Trust, sink_for: SinkFactory) -> BundleManifest:
    """Read the whole bundle, verified; return its manifest.

    ``trust(manifest_bytes)`` verifies the manifest (raising ``BundleRefused``);
    ``sink_for(name)`` gives where a verified member's bytes go (or None).  A
    sink receives bytes before the member's hash is known: an installer writes
    only after a first walk with no sinks has passed, and checks again here.
    """
    try:
        with path.open("rb") as raw:
            frame = ZstdFrameReader(raw)
            buffered = io.BufferedReader(frame, buffer_size=_CHUNK)
            with tarfile.open(fileobj=buffered, mode="r|") as tar:
                manifest = _walk_members(tar, trust, sink_for)
            frame.drain()
    except FileNotFoundError as exc:
        raise BundleRefused("missing", f"{path}: no such file") from exc
    except tarfile.TarError as exc:
        raise BundleRefused("truncated", f"not a whole tar archive: {exc}") from exc
    except EOFError as exc:
        raise BundleRefused("truncated", f"the archive ends early: {exc}") from exc
    return manifest


def _walk_members(tar: tarfile.TarFile, trust: Trust, sink_for: SinkFactory) -> BundleManifest:
    manifest: BundleManifest | None = None
    seen: set[str] = set()
    for index, member in enumerate(tar):
        if index > _MAX_MEMBERS:
            raise BundleRefused("members", f"more than {_MAX_MEMBERS} members")
        if not member.isfile():
            raise BundleRefused("members", f"{member.name!r} is not a regular file")
        if manifest is None:
            if member.name != MANIFEST_MEMBER or member.size > MAX_ENVELOPE_BYTES:
                raise BundleRefused("manifest", f"the first member must be {MANIFEST_MEMBER}")
            manifest = trust(_read_all(tar, member))
            continue
        declared = manifest.files.get(member.name)
        if declared is None:
            raise BundleRefused("members", f"{member.name!r} is not in the signed manifest")
        if member.name in seen:
            raise BundleRefused("members", f"{member.name!r} appears twice")
        seen.add(member.name)
        if member.size != declared.size:
            raise BundleRefused(
                "size", f"{member.name}: {member.size} bytes, the manifest signs {declared.size}"
            )
        _stream_member(tar, member, ArtifactDigest(declared, what=member.name), sink_for)
    if manifest is None:
        raise BundleRefused("manifest", "the bundle holds no manifest")
    missing = sorted(set(manifest.files) - seen)
    if missing:
        raise BundleRefused("truncated", f"signed files missing: {', '.join(missing[:5])}")
    return manifest


def _read_all(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    if handle is None:
        raise BundleRefused("manifest", "the manifest has no content")
    data = handle.read()
    if len(data) != member.size:
        raise BundleRefused("truncated", "the manifest is cut short")
    return data


def _stream_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, digest: ArtifactDigest, sink_for: SinkFactory
) -> None:
    handle = tar.extractfile(member)
    if handle is None:
        raise BundleRefused("members", f"{member.name!r} has no content")
    sink = sink_for(member.name)
    try:
        while chunk := handle.read(1 << 20):
            digest.feed(chunk)
            if sink is not None:
                sink.write(chunk)
        digest.finish()
    except VerificationError as exc:
        raise BundleRefused(exc.check, str(exc)) from exc
