"""The object store on S3 (any S3-compatible server: AWS, SeaweedFS, MinIO, Ceph).

Talks S3 through ``pyarrow.fs.S3FileSystem`` (the AWS SDK inside pyarrow, which
the lake already needs: no extra dependency, no hand-written signing).

Atomicity: a single PUT is atomic, so :meth:`S3ObjectStore.put` sends the
bytes in one request.  A streamed write (a multipart upload) is completed by
pyarrow even when the writer fails half-way, so :meth:`concat` and
:meth:`put_file` stream into a staging key under ``staging/`` first and then
copy it server-side to the final key: the final key appears whole or not at all.
A file or a concatenation of at most ``SINGLE_PUT_BYTES`` (a tus chunk, a
small blob) is sent in one PUT instead: one request rather than three.

``s3://BUCKET[/PREFIX]?endpoint=http://HOST:PORT&region=R`` names a store
(:func:`parse_s3_url`); credentials come from the settings or, when absent,
from the standard AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``~/.aws``).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyarrow.fs as pafs

from cloud_ingest.errors import BadRequest
from cloud_ingest.object_store import (
    READ_PIECE,
    ContentCheck,
    ObjectInfo,
    ObjectStoreUnavailable,
    check_key,
)

__all__ = ["S3Location", "S3ObjectStore", "parse_s3_url"]

STAGING = "staging"  # streamed writes land here before their server-side copy
SINGLE_PUT_BYTES = 16 << 20  # files up to this size are sent in one PUT (read into memory)
_QUERY_KEYS = frozenset({"endpoint", "region"})


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str  # "" or "a/b" (no slashes at the ends)
    endpoint: str | None  # http(s)://host:port of a non-AWS server
    region: str

    @property
    def url(self) -> str:
        where = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        return where + (f"?endpoint={self.endpoint}" if self.endpoint else "")


def parse_s3_url(url: str) -> S3Location:
    """The parts of ``s3://bucket[/prefix]?endpoint=...&region=...``, or a :class:`BadRequest`."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise BadRequest(f"--store {url!r}: expected s3://BUCKET[/PREFIX][?endpoint=URL]")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - _QUERY_KEYS)
    if unknown:
        raise BadRequest(f"--store: unknown option(s) {', '.join(unknown)} (endpoint, region)")
    endpoint = query.get("endpoint", [None])[-1]
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise BadRequest(f"--store: endpoint {endpoint!r} must be http://... or https://...")
    prefix = parts.path.strip("/")
    if prefix:
        try:
            check_key(prefix)
        except ValueError:
            raise BadRequest(f"--store: {prefix!r} is not a usable key prefix") from None
    return S3Location(
        bucket=parts.netloc,
        prefix=prefix,
        endpoint=endpoint,
        region=query.get("region", ["us-east-1"])[-1],
    )


class S3ObjectStore:
    """Objects under ``s3://bucket/prefix/``; every failure to reach S3 is retryable (503)."""

    def __init__(
        self,
        location: S3Location,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        create_bucket: bool = False,
        timeout_s: float = 30.0,
    ) -> None:
        self.location = location
        options: dict[str, object] = {
            "region": location.region,
            "connect_timeout": min(timeout_s, 10.0),
            "request_timeout": timeout_s,
            "allow_bucket_creation": create_bucket,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=4),
        }
        if location.endpoint is not None:
            endpoint = urlsplit(location.endpoint)
            options["endpoint_override"] = endpoint.netloc
            options["scheme"] = endpoint.scheme
        if access_key is not None and secret_key is not None:
            options["access_key"], options["secret_key"] = access_key, secret_key
        self.fs = pafs.S3FileSystem(**options)
        self._base = "/".join(p for p in (location.bucket, location.prefix) if p)
        if create_bucket:
            with _unavailable_on_error(f"creating bucket {location.bucket}"):
                self.fs.create_dir(location.bucket)

    @property
    def url(self) -> str:
        return self.location.url

    def _path(self, key: str) -> str:
        return f"{self._base}/{check_key(key)}"

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with _unavailable_on_error(f"writing {key}"), self.fs.open_output_stream(path) as out:
            out.write(data)  # one buffer, closed at once: a single atomic PUT

    def put_file(self, key: str, source: Path) -> None:
        if source.stat().st_size <= SINGLE_PUT_BYTES:  # one request, atomic: no staging
            self.put(key, source.read_bytes())
            source.unlink(missing_ok=True)
            return
        staged = self._staging_key(key)
        with _unavailable_on_error(f"uploading {key}"):
            try:
                with source.open("rb") as f, self.fs.open_output_stream(self._path(staged)) as out:
                    while piece := f.read(READ_PIECE):
                        out.write(piece)
                self.fs.copy_file(self._path(staged), self._path(key))
            finally:
                self._forget(staged)
        source.unlink(missing_ok=True)

    def concat(self, key: str, parts: Iterable[str], *, sha256: str | None = None) -> int:
        digest = ContentCheck(sha256)
        pieces = self._pieces_of(parts, digest)
        head = bytearray()
        for piece in pieces:  # up to SINGLE_PUT_BYTES in memory: then one atomic PUT
            head += piece
            if len(head) > SINGLE_PUT_BYTES:
                return self._concat_staged(key, bytes(head), pieces, digest)
        digest.verify()
        self.put(key, bytes(head))
        return len(head)

    def _pieces_of(self, parts: Iterable[str], digest: ContentCheck) -> Iterator[bytes]:
        for part in parts:
            for piece in self.iter_bytes(part):
                digest.update(piece)
                yield piece

    def _concat_staged(
        self, key: str, head: bytes, rest: Iterator[bytes], digest: ContentCheck
    ) -> int:
        """A large concatenation: streamed to a staging key, checked, copied into place."""
        staged = self._staging_key(key)
        size = len(head)
        with _unavailable_on_error(f"assembling {key}"):
            try:
                with self.fs.open_output_stream(self._path(staged)) as out:
                    out.write(head)
                    for piece in rest:
                        out.write(piece)
                        size += len(piece)
                digest.verify()
                self.fs.copy_file(self._path(staged), self._path(key))
            finally:
                self._forget(staged)
        return size

    def get(self, key: str) -> bytes:
        with (
            _unavailable_on_error(f"reading {key}"),
            self.fs.open_input_stream(self._path(key)) as f,
        ):
            return bytes(f.readall())

    def iter_bytes(self, key: str, piece: int = READ_PIECE) -> Iterator[bytes]:
        with (
            _unavailable_on_error(f"reading {key}"),
            self.fs.open_input_stream(self._path(key)) as f,
        ):
            while data := f.read(piece):
                yield bytes(data)

    def iter_range(
        self, key: str, start: int, length: int, piece: int = READ_PIECE
    ) -> Iterator[bytes]:
        with (
            _unavailable_on_error(f"reading {key}"),
            self.fs.open_input_file(self._path(key)) as f,  # random access: ranged GETs
        ):
            while length > 0 and (data := f.read_at(min(piece, length), start)):
                start += len(data)
                length -= len(data)
                yield bytes(data)

    def size(self, key: str) -> int | None:
        with _unavailable_on_error(f"looking up {key}"):
            info = self.fs.get_file_info(self._path(key))
        return info.size if info.type == pafs.FileType.File else None

    def list(self, prefix: str) -> list[ObjectInfo]:
        base = self._path(prefix)
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        with _unavailable_on_error(f"listing {prefix}"):
            infos = self.fs.get_file_info(selector)
        start = len(self._base) + 1
        found = [
            ObjectInfo(info.path[start:], info.size or 0)
            for info in infos
            if info.type == pafs.FileType.File
        ]
        return sorted(found, key=lambda o: o.key)

    def move(self, source: str, target: str) -> None:
        with _unavailable_on_error(f"moving {source}"):
            self.fs.copy_file(self._path(source), self._path(target))
            self.fs.delete_file(self._path(source))

    def delete(self, key: str) -> None:
        with _unavailable_on_error(f"deleting {key}"), contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self._path(key))

    def arrow_location(self, prefix: str) -> tuple[pafs.FileSystem, str]:
        return self.fs, self._path(prefix)

    def _staging_key(self, key: str) -> str:
        name = check_key(key).rsplit("/", 1)[-1]
        return f"{STAGING}/{secrets.token_hex(8)}-{name}.part"

    def _forget(self, staged: str) -> None:
        with contextlib.suppress(OSError):
            self.fs.delete_file(self._path(staged))


@contextlib.contextmanager
def _unavailable_on_error(what: str) -> Iterator[None]:
    """A network or server failure becomes :class:`ObjectStoreUnavailable` (503, retryable).

    ``FileNotFoundError`` passes unchanged: a missing object is an answer, not an outage.
    """
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ObjectStoreUnavailable(f"object store: {what} failed: {exc}") from exc
