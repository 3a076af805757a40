"""``yardlink ingest compact``: merge the small batch files of closed lake partitions.

    yardlink ingest compact [--config FILE | --data-dir DIR] [--catalog URL] [--store URL]
                            [--closed-before YYYY-MM-DD] [--target-mb N] [--json]

Run from a timer (one at a time, see ``lake_compaction.py``), against the same
catalog and store as the service; it works while the service runs.  By default
every partition dated before yesterday (UTC) is closed: records arriving later
for such a date land in a new small file, merged by the next run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
from collections.abc import Callable

from cloud_ingest.catalog_open import open_catalog
from cloud_ingest.errors import BadRequest
from cloud_ingest.lake_compaction import CompactionReport, compact_lake
from cloud_ingest.settings import IngestSettings
from cloud_ingest.storage import open_storage

__all__ = ["register_compaction"]


def register_compaction(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    where: Callable[[argparse.ArgumentParser], None],
    settings_of: Callable[[argparse.Namespace], IngestSettings],
) -> None:
    compact = commands.add_parser("compact", help="merge the small files of closed lake partitions")
    where(compact)
    compact.add_argument(
        "--closed-before",
        type=_date,
        help="merge partitions dated before this day (default: yesterday, UTC)",
    )
    compact.add_argument(
        "--target-mb", type=int, default=128, help="size of a merged file (default 128)"
    )
    compact.add_argument("--json", action="store_true", help="print the report as JSON")

    def run(args: argparse.Namespace) -> int:
        if not 1 <= args.target_mb <= 4096:
            raise BadRequest("--target-mb must be between 1 and 4096")
        settings = settings_of(args)
        closed_before = args.closed_before or dt.datetime.now(dt.UTC).date() - dt.timedelta(1)
        report = asyncio.run(_compact(settings, closed_before, args.target_mb << 20))
        if args.json:
            print(json.dumps(dataclasses.asdict(report)))
        else:
            print(
                f"{report.partitions} partitions: {report.files_merged} files merged into "
                f"{report.files_written} ({report.rows} rows); "
                f"{len(report.unrecorded_kept)} without a catalog row kept"
            )
        return 0

    compact.set_defaults(handler=run)


async def _compact(
    settings: IngestSettings, closed_before: dt.date, target_bytes: int
) -> CompactionReport:
    storage = open_storage(settings)
    catalog = await open_catalog(settings)

    async def is_recorded(batch_id: str) -> bool:
        return await catalog.get_batch(batch_id) is not None

    try:
        return await compact_lake(
            storage.lake, is_recorded, closed_before=closed_before, target_bytes=target_bytes
        )
    finally:
        await catalog.close()


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None
