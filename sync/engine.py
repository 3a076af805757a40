"""The sync engine: drives outbox -> cloud over a link that keeps failing.

One supervised task runs the loop::

    handshake (POST /v1/sync) -> delta-ack what the cloud holds, queue raw requests
        (a metadata send starts while it is on the wire: see ``_work``)
    repeat: scheduler picks a stream ->
        metadata: next batch (pinned before sending) -> PUT /v1/batches/{id} -> ack
        raw:      blob refs -> tus uploads, several in flight (resumable) -> ack in seq order
    on a failure: no answer at all (the link is down) -> try again about every
        probe_interval_s (jittered); an answer of trouble (5xx, 429) -> the link
        monitor's backoff (full jitter); then a handshake once the link is offline

Controls for the local API: :meth:`pause`, :meth:`resume`, :meth:`sync_now`,
:meth:`set_bandwidth_cap`, :meth:`progress`, and :meth:`notify` (call after
appends so young batches are noticed without polling delay).

Bad input from the cloud never stops the loop and never drops records:

* malformed handshake answer, 5xx, refused or cut connections: logged, the
  link monitor backs off, the same work is retried (an error that is not
  ``retryable`` - a malformed answer, a 4xx - waits at least
  ``sync.link.PERMANENT_WAIT_S``: it will not pass by itself at link speed);
* 409 on a batch (the id is held with another digest): logged at ERROR, the
  stream is held at that batch - records kept, not acked, also not by the
  handshake's watermark (the conflict is persisted in the state file) - and
  the other streams go on; an operator must look (``progress().classes[s].stalled``);
* a record that does not fit its schema (``BadRecord``) holds its stream the same way;
* a raw request for an unknown record is reported back once as unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from sync.batches import BatchLimits
from sync.delivery_window import batch_ready
from sync.engine_state import EngineStateFile
from sync.errors import CloudUnreachable, SyncError
from sync.link import LinkMonitor
from sync.metadata_delivery import MetadataDelivery, SentBatch
from sync.outbox import Outbox
from sync.ports import BlobSource, ModelInventory
from sync.progress import ClassProgress, CurrentUpload, SyncProgress
from sync.protocol import METADATA_STREAMS, RAW_STREAMS, DepthInfo, LinkStats, Stream, SyncRequest
from sync.raw_delivery import RawDelivery
from sync.raw_lanes import RawLanes
from sync.raw_uploads import RawSent, RawUploads
from sync.scheduler import Backlog, Decision, Scheduler, SchedulerPolicy, TokenBucket, utc_day
from sync.settings import SyncSettings
from sync.transport import TransportFactory, connect_cloud
from sync.uploader import ChunkSizer, TusUploader

__all__ = ["SyncEngine"]

log = logging.getLogger(__name__)


class SyncEngine:
    """Create, ``await start()``, ``await close()``.

    ``transport`` builds what talks to the cloud from the settings and the
    engine's bandwidth bucket (default: HTTP to ``settings.cloud_url``, which
    must then be set with ``settings.token``).
    """

    def __init__(
        self,
        outbox: Outbox,
        settings: SyncSettings,
        *,
        device_id: str,
        site_id: str,
        blob_source: BlobSource,
        state_path: Path,
        models: ModelInventory | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        transport: TransportFactory = connect_cloud,
    ) -> None:
        self.bucket = TokenBucket(settings.bandwidth_cap_bps)
        self.client = transport(settings, self.bucket)
        self.outbox, self.settings = outbox, settings
        self.device_id, self.site_id = device_id, site_id
        self._models = models
        self._clock = clock
        self.state = EngineStateFile(state_path)
        self.link = LinkMonitor(settings.link, rng=rng)
        self.scheduler = Scheduler(
            SchedulerPolicy(
                aging_after_s=settings.aging_after_s,
                aging_share=settings.aging_share,
                daily_budget_bytes=settings.daily_budget_bytes,
            )
        )
        if self.state.state.day == utc_day(clock()):
            self.scheduler.restore_sent_today(self.state.state.sent_today, clock())
        sizer = ChunkSizer(
            settings.chunk_min_bytes, settings.chunk_max_bytes, settings.chunk_target_s
        )
        self.uploader = TusUploader(
            self.client,
            self.state,
            sizer,
            link=self.link,
            chunk_checksums=lambda: not self.link.flaky(self._clock()),
        )
        self.raw = RawDelivery(outbox, self.state, blob_source)
        self.raw_uploads = RawUploads(outbox, self.raw, self.uploader, self.client)
        self.raw_lanes = RawLanes(
            self.raw,
            self.raw_uploads,
            rate_Bps=self._raw_rate_Bps,
            rtt_s=self._rtt_s,
            target_s=settings.chunk_target_s,
            min_chunk=settings.chunk_min_bytes,
            max_chunk=settings.chunk_max_bytes,
        )
        # sent while raw uploads flow (see _send_raw)
        self._side_handshake: asyncio.Task[None] | None = None
        self._side_metadata: asyncio.Task[None] | None = None
        self.limits = BatchLimits(
            settings.batch_max_records, settings.batch_max_bytes, settings.batch_max_age_s
        )
        self._paused = False
        self._flush = False
        self._handshake_due = True
        self._next_handshake = 0.0
        self._last_handshake: float | None = None
        self._clock_skew_s: float | None = None  # this clock minus the cloud's, last handshake
        self._wake = asyncio.Event()
        self._idle = False
        self._task: asyncio.Task[None] | None = None
        self.meta = MetadataDelivery(
            outbox, self.state, self.client, self.limits, device_id, site_id, clock
        )
        self._sent_bytes = dict.fromkeys(Stream, 0)
        self._sent_records = dict.fromkeys(Stream, 0)
        self._last_sent_at: dict[Stream, float | None] = dict.fromkeys(Stream)
        self._last_error: str | None = None

    # ------------------------------------------------------------------ lifecycle and controls

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sync-engine")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.client.close()

    def pause(self) -> None:
        """Stop sending after the request in flight (at most one chunk or batch)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._wake.set()

    def sync_now(self) -> None:
        """Handshake now, send young batches without waiting, skip the current backoff."""
        self._flush = True
        self._handshake_due = True
        self._wake.set()

    def notify(self) -> None:
        """Something was appended: look at the outbox now (never cuts a backoff short)."""
        if self._idle:
            self._wake.set()

    def set_bandwidth_cap(self, bps: float | None) -> None:
        self.bucket.set_rate(bps)
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def progress(self) -> SyncProgress:
        now = self._clock()
        stats = self.outbox.stats().per_class
        sent_today = self.scheduler.sent_today(now)
        link = self.link.snapshot()
        current = self.uploader.current
        classes = {
            s: ClassProgress(
                pending_records=stats[s].records,
                pending_bytes=stats[s].bytes,
                oldest_age_s=stats[s].oldest_age_s,
                sent_records=self._sent_records[s],
                sent_bytes=self._sent_bytes[s],
                sent_today_bytes=sent_today[s],
                budget_left_bytes=self.scheduler.budget_left(s, now),
                stalled=self.meta.stalled.get(s),
                skipped_records=self.raw.skipped(s) if s in RAW_STREAMS else 0,
                given_up_records=self.raw.given_up[s],
                last_sent_at=self._last_sent_at[s],
            )
            for s in Stream
        }
        return SyncProgress(
            running=self.running,
            paused=self._paused,
            link=link.state,
            bandwidth_bps=link.bandwidth_bps,
            rtt_ms=link.rtt_ms,
            consecutive_failures=link.consecutive_failures,
            bandwidth_cap_bps=self.bucket.rate_bps,
            classes=classes,
            upload=None if current is None else CurrentUpload(**asdict(current)),
            last_error=self._last_error,
            last_handshake_at=self._last_handshake,
            clock_skew_s=self._clock_skew_s,
            unknown_raw_requests=len(self.state.state.unknown),
            resent_bytes=self.raw_uploads.resent_bytes,
            background_failures=self.meta.quiet_failures,
            raw_request_failures=self.raw.resolve_failures,
        )

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except SyncError as exc:  # typed: no answer -> a probe, else its retryable flag
                self._failed(exc)
                if _unreachable(exc):
                    await self._sleep(self.link.probe_wait_s(self._clock()))
                else:
                    await self._sleep(self.link.retry_after_s(retryable=exc.retryable))
            except Exception as exc:  # supervised loop: log, back off, go on
                log.exception("sync step failed unexpectedly; backing off")
                self._failed(exc)
                await self._sleep(self.link.retry_after_s(retryable=False))

    async def _step(self) -> None:
        self._wake.clear()  # controls used from here on end the next sleep
        if self._paused:
            await self._sleep(math.inf)
            return
        now = self._clock()
        handshake: asyncio.Task[None] | None = None
        due = self._handshake_due or now >= self._next_handshake
        if due or not self.link.usable or self.outbox.history_unconfirmed:
            handshake = asyncio.create_task(self._handshake())
        try:
            await self._work(handshake)
        except BaseException:
            if handshake is not None:
                handshake.cancel()
                await asyncio.gather(handshake, return_exceptions=True)
            raise

    async def _work(self, handshake: asyncio.Task[None] | None) -> None:
        """One step's work; a metadata send or raw uploads start while ``handshake``
        is on the wire.

        An idle wait follows the handshake's answer, and a failed handshake fails
        the step as before.  A batch may go out first because the cloud refuses
        one that shares seqs with a batch it holds (412, see
        ``CloudClient.put_batch``).  Raw uploads go on beside it as beside a
        handshake that falls due while they flow (``_send_raw``): the raw requests
        its answer queues take over at the next chunk boundary.  So after a
        reconnect the link carries blob bytes one round trip sooner.
        """
        if handshake is not None:
            await asyncio.sleep(0)  # the handshake request goes out before the outbox reads
            await self.meta.warm_up()  # the first batches encode while the handshake flies
        decision, wait_s = self._decide()
        # The seqs an outbox issued since it opened are confirmed (maybe renumbered) by a
        # handshake's answer: nothing goes out before (Outbox.confirm_history).
        unconfirmed = self.outbox.history_unconfirmed
        if handshake is not None and (decision is None or unconfirmed):
            await handshake
            handshake = None
            decision, wait_s = self._decide()
        if decision is None:
            self._flush = False
            self._idle = True
            try:
                await self._sleep(min(wait_s, self._next_handshake - self._clock()))
            finally:
                self._idle = False
            return
        if decision.stream.is_metadata:
            await self._send_meta_step(decision.stream, handshake)
        else:
            self._side_handshake = handshake  # the raw uploads go beside it
            await self._send_raw(decision.stream)

    async def _send_meta_step(self, stream: Stream, handshake: asyncio.Task[None] | None) -> None:
        started = time.monotonic()
        batches = await self._send_metadata(stream, handshake)
        for sent in batches:
            self._sent(stream, sent.body_bytes, sent.records)
        if batches:
            nbytes = sum(b.body_bytes for b in batches)
            elapsed = time.monotonic() - started
            self.link.succeeded(self._clock(), nbytes=nbytes, seconds=elapsed)

    async def _send_metadata(
        self, stream: Stream, handshake: asyncio.Task[None] | None
    ) -> list[SentBatch]:
        try:
            return await self.meta.send_beside(stream, lambda: self._still_first(stream), handshake)
        finally:
            if self.meta.handshake_wanted:  # a 412: the cloud holds seqs we did not know of
                self.meta.handshake_wanted = False
                self._handshake_due = True

    def _decide(self) -> tuple[Decision | None, float]:
        now = self._clock()
        stats = self.outbox.stats().per_class
        backlog: dict[Stream, Backlog] = {}
        unready: list[Stream] = []  # metadata waiting for a fuller (or older) batch
        wait_s = max(0.05, min(1.0, self.limits.max_age_s))  # poll for new appends
        for stream in Stream:
            item = stats[stream]
            if stream.is_metadata:
                flush = self._flush or bool(self.outbox.pinned_batches(stream))
                if item.records and not batch_ready(item, self.limits, flush=flush):
                    wait_s = min(wait_s, self.limits.max_age_s - item.oldest_age_s)
                    if stream not in self.meta.stalled:
                        unready.append(stream)
                    continue
            elif not (self.raw.has_next(stream) or self.raw.under_way(stream)):
                continue
            backlog[stream] = Backlog(item.records, item.bytes, item.oldest_age_s)
        decision = self.scheduler.decide(
            backlog, now, link_up=True, blocked=frozenset(self.meta.stalled)
        )
        if isinstance(decision, Decision):
            # A young partial batch waits only while the link would idle: never let a
            # lower class (raw) go first - flush the higher metadata class instead.
            higher = [s for s in unready if s.priority < decision.stream.priority]
            if higher and not decision.aged:
                return Decision(higher[0], None), 0.0
            return decision, 0.0
        return None, min(wait_s, decision.wait_s)

    def _still_first(self, stream: Stream) -> bool:
        """Whether ``stream`` would still be chosen now (nothing more urgent arrived)."""
        if self._paused:
            return False
        decision, _ = self._decide()
        return decision is not None and decision.stream is stream

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel (close hangs).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(None if math.isinf(seconds) else seconds):
                await self._wake.wait()

    def _failed(self, exc: BaseException) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}"
        self.link.failed(self._clock(), self._last_error, unreachable=_unreachable(exc))
        level = logging.WARNING if isinstance(exc, SyncError) and exc.retryable else logging.ERROR
        log.log(level, "sync: %s (link %s)", self._last_error, self.link.state)

    def _sent(self, stream: Stream, nbytes: int, records: int) -> None:
        now = self._clock()
        self.scheduler.record_sent(stream, nbytes, now)
        self._sent_bytes[stream] += nbytes
        self._sent_records[stream] += records
        if records:
            self._last_sent_at[stream] = now
        if self.settings.daily_budget_bytes:
            self.state.state.day = utc_day(now)
            self.state.state.sent_today = self.scheduler.sent_today(now)
            self.state.save()

    # ------------------------------------------------------------------ handshake

    async def _handshake(self) -> None:
        stats = self.outbox.stats().per_class
        state = self.state.state
        delivered, unknown = list(state.delivered), list(state.unknown)
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
            delivered_raw_requests=delivered[:10_000],
            unknown_raw_requests=unknown[:10_000],
            want_held=True,
        )
        started = time.monotonic()
        answer = await self.client.handshake(request)
        self.link.observe_rtt(time.monotonic() - started)
        self.link.succeeded(self._clock())
        self._handshake_due = False
        self._last_handshake = self._clock()
        self._next_handshake = self._last_handshake + self.settings.handshake_interval_s
        if answer.server_time is not None:  # the cloud answered about half an RTT ago
            rtt_s = time.monotonic() - started
            self._clock_skew_s = round(self._last_handshake - rtt_s / 2 - answer.server_time, 3)
        self.raw.reported(delivered, unknown)
        await self.meta.delta_ack(answer.acked, answer.held)
        if answer.raw_requests:
            queued = await self.raw.queue_requests(answer.raw_requests)
            if queued:
                log.info("queued %d raw blobs requested by the cloud", queued)

    # ------------------------------------------------------------------ raw blobs

    async def _send_raw(self, stream: Stream) -> None:
        """Raw uploads of ``stream`` (several in flight) while it stays the first choice.

        Beside them go, without cutting the chunks on the wire short: a handshake
        that falls due (it may queue raw requests, which then go before
        ``raw_sampled``), and a metadata send when events arrive (no upload starts
        a chunk until it is done).  One that fails stops the uploads at their next
        chunk and fails the step."""
        try:
            await self.raw_lanes.run(
                stream,
                lambda: self._raw_goes_on(stream),
                lambda: self.scheduler.budget_left(stream, self._clock()),
                self._raw_sent,
                lambda: self.link.succeeded(self._clock()),
            )
        except BaseException:
            for side in self._take_sides():
                side.cancel()
                await asyncio.gather(side, return_exceptions=True)
            raise
        for side in self._take_sides():
            await side  # a failed one raises: the engine backs off

    def _take_sides(self) -> list[asyncio.Task[None]]:
        sides = [t for t in (self._side_handshake, self._side_metadata) if t is not None]
        self._side_handshake = self._side_metadata = None
        return sides

    async def _raw_goes_on(self, stream: Stream) -> bool:
        """Whether an upload of ``stream`` may send its next chunk (it waits for events)."""
        while True:
            for side in (self._side_handshake, self._side_metadata):
                if side is not None and side.done() and (side.cancelled() or side.exception()):
                    return False  # raised by _send_raw
            if self._side_handshake is not None and self._side_handshake.done():
                self._side_handshake = None
            if self._side_metadata is not None:
                if not self._side_metadata.done():
                    await asyncio.wait({self._side_metadata})
                    continue
                self._side_metadata = None
            due = self._handshake_due or self._clock() >= self._next_handshake
            if due and self._side_handshake is None:
                self._side_handshake = asyncio.create_task(self._handshake())
            decision, _ = self._decide()
            if self._paused or decision is None or not decision.stream.is_metadata:
                return decision is not None and decision.stream is stream and not self._paused
            self._side_metadata = asyncio.create_task(
                self._send_meta_step(decision.stream, self._side_handshake)
            )

    def _raw_sent(self, stream: Stream, sent: RawSent) -> None:
        self._sent(stream, sent.bytes_sent, 1 if sent.delivered else 0)

    def _raw_rate_Bps(self) -> float | None:
        """The link's rate for sizing the raw uploads: per request, else the link monitor's."""
        if self.uploader.sizer.rate_Bps is not None:
            return self.uploader.sizer.rate_Bps
        bps = self.link.bandwidth_bps
        return None if bps is None else bps / 8

    def _rtt_s(self) -> float | None:
        rtt_ms = self.link.snapshot().rtt_ms
        return None if rtt_ms is None else rtt_ms / 1000


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it: an upload error wraps the transport's)
    is a request that got no answer at all: the link is down."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, CloudUnreachable):
            return True
        seen = seen.__cause__
    return False
