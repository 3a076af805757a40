"""``PUT /v1/batches/{batch_id}``: one metadata micro-batch into the lake, exactly once.

Idempotency is keyed by ``(batch_id, sha256(body))``: a batch id already held
with the same digest is answered 200 ``duplicate: true`` and nothing is
written.  With another digest the rows decide: the same rows in other bytes (a
device that re-encodes a pinned batch after an upgrade: a new pyarrow, a column
added since, see ``LATER_COLUMNS``) are a duplicate too; other rows are a 409.
Within this process a per-id lock keeps two concurrent PUTs of one id from
both writing; across a crash, the lake file is written (atomically) before the
catalog row, so a retry after a crash between the two rewrites the same file
and then records it: stored once.

With the ``Yardlink-If-No-Overlap`` header, a new id whose seq range meets a
batch held under another id is refused (412) before anything is written: a
device that sends before its handshake's answer cannot duplicate records.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

import pyarrow as pa
from aiohttp import hdrs, web

from cloud_ingest.app_keys import CATALOG, CLOCK, METRICS, SETTINGS
from cloud_ingest.batch_validation import ValidBatch, parse_canonical_batch_id, validate_batch
from cloud_ingest.catalog import BatchRecord
from cloud_ingest.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    PreconditionFailed,
    UnsupportedMediaType,
)
from cloud_ingest.json_bodies import read_limited
from cloud_ingest.keyed_locks import KeyedLocks
from cloud_ingest.lake import Lake, read_batch, remove_files, write_batch
from cloud_ingest.principal import require_device
from cloud_ingest.storage import STORAGE
from sync.protocol import (
    BATCH_CONTENT_TYPE,
    NO_OVERLAP_HEADER,
    BatchAck,
    BatchIdParts,
    WireFormatError,
)
from sync.protocol.parquet import STREAM_SCHEMAS

__all__ = ["ACCEPTED_CONTENT_TYPES", "add_batch_routes"]

ACCEPTED_CONTENT_TYPES = frozenset({BATCH_CONTENT_TYPE, "application/octet-stream"})
log = logging.getLogger(__name__)
_LOCKS: web.AppKey[KeyedLocks] = web.AppKey("yardlink.batch_locks", KeyedLocks)
_HASH_INLINE_BYTES = 1 << 20  # larger bodies are hashed on a worker thread


def add_batch_routes(app: web.Application) -> None:
    app[_LOCKS] = KeyedLocks()
    app.router.add_put("/v1/batches/{batch_id}", put_batch)


async def put_batch(request: web.Request) -> web.Response:
    principal = require_device(request)
    app = request.app
    catalog, metrics = app[CATALOG], app[METRICS]
    raw_id = request.match_info["batch_id"]
    parts = parse_canonical_batch_id(raw_id)
    if parts.device_id != principal.device_id:
        raise Forbidden(f"batch {raw_id!r} belongs to another device")
    if principal.site_id is None:
        raise Forbidden("device has no site")
    content_type = request.headers.get(hdrs.CONTENT_TYPE)
    if content_type is not None and request.content_type not in ACCEPTED_CONTENT_TYPES:
        raise UnsupportedMediaType(f"batches are {BATCH_CONTENT_TYPE}, not {content_type[:80]!r}")
    no_overlap = request.headers.get(NO_OVERLAP_HEADER)
    if no_overlap is not None and no_overlap.strip() != "1":
        raise BadRequest(f"{NO_OVERLAP_HEADER} takes the value 1, not {no_overlap[:40]!r}")
    body = await read_limited(request, app[SETTINGS].max_batch_bytes, "batch")
    if not body:
        raise BadRequest("empty body: a batch is a Parquet file")
    if len(body) > _HASH_INLINE_BYTES:
        digest = await asyncio.to_thread(_sha256, body)
    else:
        digest = _sha256(body)

    async with app[_LOCKS].hold(raw_id):
        existing = await catalog.get_batch(raw_id)
        if existing is None:
            if no_overlap is not None:
                other = await catalog.overlapping_batch(
                    parts.device_id, parts.stream, parts.first_seq, parts.last_seq
                )
                if other is not None:
                    metrics.batches.labels(parts.stream.value, "overlap").inc()
                    raise PreconditionFailed(
                        f"batch {raw_id!r} shares seqs with batch {other!r} held by the cloud;"
                        " nothing stored (handshake, then send what is above the watermark)"
                    )
            try:
                valid, paths = await asyncio.to_thread(
                    _validate_and_write, app, parts, principal.site_id, raw_id, body
                )
            except WireFormatError as exc:
                metrics.batches.labels(parts.stream.value, "rejected").inc()
                raise BadRequest(str(exc)) from exc
            record = BatchRecord(
                batch_id=raw_id,
                device_id=parts.device_id,
                site_id=principal.site_id,
                stream=parts.stream,
                first_seq=parts.first_seq,
                last_seq=parts.last_seq,
                records=valid.table.num_rows,
                sha256=digest,
                size=len(body),
                lake_paths=tuple(paths),
                received_at=app[CLOCK](),
            )
            try:
                stored = await catalog.record_batch(record)
            except Exception:  # no lake file left without its catalog row
                # (cancelled instead, the commit may still land: the files stay,
                # as after a crash between the two, until a retry records them)
                await asyncio.to_thread(_remove_lake_files, app[STORAGE].lake, paths)
                raise
            duplicate = stored is not record
        else:
            stored, duplicate = existing, True

    if stored.sha256 != digest:
        if not await _same_rows(app, stored, parts, body):
            metrics.batches.labels(parts.stream.value, "conflict").inc()
            raise Conflict(
                f"batch {raw_id!r} is already held with another content "
                f"(sha256 {stored.sha256}); batch ids must name one content"
            )
        log.info("batch %s: the rows already held, in other bytes (re-encoded); duplicate", raw_id)
    metrics.batches.labels(parts.stream.value, "duplicate" if duplicate else "stored").inc()
    if not duplicate:
        metrics.records.labels(parts.stream.value).inc(stored.records)
        metrics.batch_bytes.inc(stored.size)
    ack = BatchAck(
        batch_id=raw_id,
        stream=parts.stream,
        records=stored.records,
        duplicate=duplicate,
        acked=await catalog.watermarks(parts.device_id),
    )
    return web.json_response(ack.model_dump(mode="json"), status=200 if duplicate else 201)


def _validate_and_write(
    app: web.Application, parts: BatchIdParts, site_id: str, batch_id: str, body: bytes
) -> tuple[ValidBatch, list[str]]:
    """Check the body, then write it into the lake (one worker-thread hop for both)."""
    valid = validate_batch(
        parts, site_id, body, max_decoded_bytes=app[SETTINGS].max_decoded_batch_bytes
    )
    paths = write_batch(
        app[STORAGE].lake,
        stream=parts.stream,
        site_id=site_id,
        batch_id=batch_id,
        table=valid.table,
        body=body,
        body_is_canonical=valid.body_is_canonical,
        event_time_range_us=valid.event_time_range_us,
    )
    return valid, paths


def _sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _remove_lake_files(lake: Lake, paths: list[str]) -> None:
    remove_files(lake, paths)
    log.warning("batch files %s removed: their catalog row could not be written", paths)


async def _same_rows(
    app: web.Application, stored: BatchRecord, parts: BatchIdParts, body: bytes
) -> bool:
    """Whether ``body`` holds exactly the rows of the batch stored under its id.

    Any doubt (the body is malformed, the stored files are gone) is a "no": the
    answer is then the 409 it always was.
    """

    def compare() -> bool:
        try:  # a bomb under a held id is refused (413) as it is read, as a new one is
            valid = validate_batch(
                parts,
                stored.site_id,
                body,
                max_decoded_bytes=app[SETTINGS].max_decoded_batch_bytes,
            )
            held = read_batch(
                app[STORAGE].lake,
                stored.lake_paths,
                STREAM_SCHEMAS[parts.stream],
                device_id=stored.device_id,
                seqs=(stored.first_seq, stored.last_seq),
            )
        except (WireFormatError, OSError, pa.ArrowException):
            return False
        return bool(valid.stream_table().sort_by("seq").combine_chunks().equals(held))

    return await asyncio.to_thread(compare)
