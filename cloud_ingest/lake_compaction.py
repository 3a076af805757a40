"""Compaction: a closed partition's many small batch files merged into a few large ones.

One Parquet file per batch piles up (a device sends a batch every few
seconds); readers pay per file.  :func:`compact_lake` merges the small files of
each closed partition (its date is before ``closed_before``) into files of
about ``target_bytes``, sorted by device and seq, named
``compacted-<job>-<n>.parquet``.

What a reader sees, on either store:

* never half a file: outputs are staged under ``compaction/<job>/`` (outside
  the lake, and named ``*.pending``, so no ``*.parquet`` glob matches them) and
  moved into the partition whole (a rename locally, a server-side copy on S3);
* never a record twice: the sources are deleted *before* the outputs appear,
  so for that moment a reader may miss the partition's merged rows, never
  count them twice;
* a crash at any step is finished by the next run: the job's manifest
  (``compaction/<job>.json``, written once every output is staged) lists the
  sources to delete and the outputs to move, and both steps are idempotent;
  staged outputs without a manifest are dropped.

The catalog is not touched: each batch keeps its row and record count, so the
exactly-once accounting (one row per batch id, the records of the lake equal
to the sum over the catalog) holds across compaction.  Only batch files whose
batch is recorded in the catalog are merged: a file written by a request still
in flight (or left by a crash before its row) stays as it is.  Run one
compaction at a time (``yardlink ingest compact`` from a timer).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from cloud_ingest.lake import Lake, encode_table
from cloud_ingest.object_store import ObjectInfo
from sync.protocol import Stream
from sync.protocol.parquet import STREAM_SCHEMAS

__all__ = ["COMPACTION", "CompactionReport", "compact_lake", "finish_interrupted"]

log = logging.getLogger(__name__)
COMPACTION = "compaction"
COMPACTED_PREFIX = "compacted-"
_PARTITION = re.compile(r"(?P<stream>[a-z_]+)/site=[^/]+/date=(?P<date>\d{4}-\d{2}-\d{2})")

_STREAM_NAMES = frozenset(stream.value for stream in Stream)
IsRecorded = Callable[[str], Awaitable[bool]]


@dataclass
class CompactionReport:
    partitions: int = 0  # partitions merged
    files_merged: int = 0  # small files replaced
    files_written: int = 0
    rows: int = 0
    unrecorded_kept: list[str] = field(default_factory=list)  # files without a catalog row
    interrupted_finished: int = 0  # jobs of a crashed run completed first


async def compact_lake(
    lake: Lake,
    is_recorded: IsRecorded,
    *,
    closed_before: dt.date,
    target_bytes: int = 128 << 20,
    min_files: int = 2,
) -> CompactionReport:
    """Merge the small files of every partition dated before ``closed_before``.

    ``is_recorded(batch_id)`` says whether the catalog holds that batch.  A
    file counts as small below half of ``target_bytes``; a partition is merged
    when it has at least ``min_files`` small ones.
    """
    report = CompactionReport()
    report.interrupted_finished = await asyncio.to_thread(finish_interrupted, lake)
    objects = await asyncio.to_thread(lake.store.list, lake.prefix)
    for partition, files in sorted(_closed_partitions(lake, objects, closed_before).items()):
        small = [o for o in files if o.size < target_bytes // 2]
        mergeable = []
        for info in small:
            name = info.key.rsplit("/", 1)[1]
            if name.startswith(COMPACTED_PREFIX) or await is_recorded(name[: -len(".parquet")]):
                mergeable.append(info)
            else:
                report.unrecorded_kept.append(lake.relative(info.key))
        if len(mergeable) < min_files:
            continue
        stream = Stream(partition.split("/", 1)[0])
        written, rows = await asyncio.to_thread(
            _merge_partition, lake, partition, stream, mergeable, target_bytes
        )
        report.partitions += 1
        report.files_merged += len(mergeable)
        report.files_written += written
        report.rows += rows
        log.info(
            "compacted",
            extra={"partition": partition, "files": len(mergeable), "into": written, "rows": rows},
        )
    return report


def finish_interrupted(lake: Lake) -> int:
    """Finish the jobs a crashed run left (manifest written); drop staged files without one."""
    store = lake.store
    objects = store.list(COMPACTION)
    manifests = [o.key for o in objects if o.key.endswith(".json")]
    for key in manifests:
        _finish_job(lake, json.loads(store.get(key)))
        store.delete(key)
    jobs_with_manifest = {key[: -len(".json")] for key in manifests}
    for info in objects:
        if info.key.endswith(".pending") and info.key.rsplit("/", 1)[0] not in jobs_with_manifest:
            store.delete(info.key)
    return len(manifests)


def _closed_partitions(
    lake: Lake, objects: list[ObjectInfo], closed_before: dt.date
) -> dict[str, list[ObjectInfo]]:
    partitions: dict[str, list[ObjectInfo]] = {}
    for info in objects:
        relative = lake.relative(info.key)
        partition, _, name = relative.rpartition("/")
        match = _PARTITION.fullmatch(partition)
        if match is None or not name.endswith(".parquet") or name.startswith("."):
            continue
        if match["stream"] not in _STREAM_NAMES:
            continue
        if dt.date.fromisoformat(match["date"]) >= closed_before:
            continue
        partitions.setdefault(partition, []).append(info)
    return partitions


def _merge_partition(
    lake: Lake, partition: str, stream: Stream, sources: list[ObjectInfo], target_bytes: int
) -> tuple[int, int]:
    """Stage the merged files, write the manifest, then swap (see the module doc)."""
    store = lake.store
    schema = STREAM_SCHEMAS[stream]
    tables = [pq.read_table(io.BytesIO(store.get(o.key)), schema=schema) for o in sources]
    merged = pa.concat_tables(tables).sort_by([("device_id", "ascending"), ("seq", "ascending")])
    job = hashlib.sha256("\n".join(o.key for o in sources).encode()).hexdigest()[:16]
    source_bytes = sum(o.size for o in sources)
    per_file = max(1, merged.num_rows * target_bytes // max(source_bytes, 1))
    outputs = []
    for n, start in enumerate(range(0, merged.num_rows, per_file)):
        staged = f"{COMPACTION}/{job}/{n}.parquet.pending"
        final = lake.key(f"{partition}/{COMPACTED_PREFIX}{job}-{n}.parquet")
        store.put(staged, encode_table(merged.slice(start, per_file)))
        outputs.append({"staged": staged, "final": final})
    manifest = {"partition": partition, "sources": [o.key for o in sources], "outputs": outputs}
    store.put(f"{COMPACTION}/{job}.json", json.dumps(manifest).encode())  # the commit point
    _finish_job(lake, manifest)
    store.delete(f"{COMPACTION}/{job}.json")
    return len(outputs), merged.num_rows


def _finish_job(lake: Lake, manifest: Mapping[str, object]) -> None:
    """Delete the sources, then move each staged output into place (idempotent)."""
    store = lake.store
    sources = manifest["sources"]
    outputs = manifest["outputs"]
    assert isinstance(sources, list) and isinstance(outputs, list)
    for key in sources:
        store.delete(str(key))
    for output in outputs:
        staged, final = str(output["staged"]), str(output["final"])
        if store.size(staged) is not None:
            store.move(staged, final)
