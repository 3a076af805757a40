"""The sync handshake (``POST /v1/sync``): when one is due, what it tells the cloud,
and what its answer does on the device.

It tells the cloud the device's watermarks, outbox depths, models and link, and the raw
requests delivered or unknown since the last one; the answer's watermarks and held
batches are acked locally (delta sync, :meth:`MetadataDelivery.delta_ack`) and its new
raw requests queued (:meth:`RawDelivery.queue_requests`).  The engine decides when it
goes (beside a metadata send or raw uploads, see :mod:`sync.engine`); this module only
keeps the schedule: every ``interval_s``, and at once when ``wanted``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sync.engine_state import EngineStateFile
from sync.link import LinkMonitor
from sync.metadata_delivery import MetadataDelivery
from sync.outbox import Outbox
from sync.ports import ModelInventory
from sync.protocol import METADATA_STREAMS, DepthInfo, LinkStats, SyncRequest
from sync.raw_delivery import RawDelivery
from sync.transport import CloudTransport

__all__ = ["Handshakes"]

log = logging.getLogger(__name__)

RAW_REQUESTS_REPORTED_MAX = 10_000  # delivered or unknown request ids per handshake


class Handshakes:
    """The handshake's schedule and one exchange (:meth:`run`)."""

    def __init__(
        self,
        outbox: Outbox,
        state: EngineStateFile,
        client: CloudTransport,
        link: LinkMonitor,
        meta: MetadataDelivery,
        raw: RawDelivery,
        *,
        device_id: str,
        site_id: str,
        models: ModelInventory | None,
        interval_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.outbox, self.state, self.client, self.link = outbox, state, client, link
        self.meta, self.raw = meta, raw
        self.device_id, self.site_id = device_id, site_id
        self._models = models
        self._interval_s = interval_s
        self._clock = clock
        self.wanted = True  # one is due whatever the schedule (start, sync_now, a 412)
        self.next_at = 0.0  # when the schedule asks for the next one (this clock)
        self.last_at: float | None = None  # when the last one was answered
        self.clock_skew_s: float | None = None  # this clock minus the cloud's, last answer

    def due(self) -> bool:
        return self.wanted or self._clock() >= self.next_at

    async def run(self) -> None:
        """One handshake; raises the transport's typed errors (nothing is changed then)."""
        stats = self.outbox.stats().per_class
        state = self.state.state
        delivered = list(state.delivered)
        unknown = list(state.unknown)
        link = self.link.snapshot()
        request = SyncRequest(
            device_id=self.device_id,
            site_id=self.site_id,
            watermarks={s: self.outbox.acked_watermark(s) for s in METADATA_STREAMS},
            outbox={s: DepthInfo(records=v.records, bytes=v.bytes) for s, v in stats.items()},
            models=self._models() if self._models is not None else [],
            link=LinkStats(
                bandwidth_bps=link.bandwidth_bps,
                rtt_ms=link.rtt_ms,
                failures=link.failures_total,
            ),
            delivered_raw_requests=delivered[:RAW_REQUESTS_REPORTED_MAX],
            unknown_raw_requests=unknown[:RAW_REQUESTS_REPORTED_MAX],
            want_held=True,
        )
        started = time.monotonic()
        answer = await self.client.handshake(request)
        rtt_s = time.monotonic() - started
        self.link.observe_rtt(rtt_s)
        self.link.succeeded(self._clock())
        self.wanted = False
        self.last_at = self._clock()
        self.next_at = self.last_at + self._interval_s
        if answer.server_time is not None:  # the cloud answered about half an RTT ago
            self.clock_skew_s = round(self.last_at - rtt_s / 2 - answer.server_time, 3)
        self.raw.reported(delivered, unknown)
        await self.meta.delta_ack(answer.acked, answer.held)
        if answer.raw_requests:
            queued = await self.raw.queue_requests(answer.raw_requests)
            if queued:
                log.info("queued %d raw blobs requested by the cloud", queued)
