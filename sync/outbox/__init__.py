"""The durable outbox: everything the appliance must deliver, in RocksDB, by priority class.

``Outbox`` (``facade``) is the one entry point; docs/OUTBOX.md has the tour.
"""

from sync.outbox.capacity import TelemetryCoalescer
from sync.outbox.facade import Outbox
from sync.outbox.ledger import EvictionListener
from sync.outbox.options import db_options
from sync.outbox.records import (
    MAX_RECEIPT_BYTES,
    BatchBoundary,
    BlobRef,
    ClassStats,
    OutboxRecord,
    OutboxStats,
    check_receipt,
)

__all__ = [
    "MAX_RECEIPT_BYTES",
    "BatchBoundary",
    "BlobRef",
    "ClassStats",
    "EvictionListener",
    "Outbox",
    "OutboxRecord",
    "OutboxStats",
    "TelemetryCoalescer",
    "check_receipt",
    "db_options",
]
