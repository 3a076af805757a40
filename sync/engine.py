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
from sync.beside_raw import BesideRaw
from sync.engine_state import EngineStateFile
from sync.errors import SyncError
from sync.handshake import Handshakes
from sync.link import LinkMonitor
from sync.metadata_delivery import MetadataDelivery
from sync.next_stream import NextStream
from sync.outbox import Outbox
from sync.ports import BlobSource, ModelInventory
from sync.progress import ClassProgress, CurrentUpload, SyncProgress
from sync.protocol import RAW_STREAMS, Stream
from sync.raw_delivery import RawDelivery
from sync.raw_lanes import RawLanes, link_rate_Bps, link_rtt_s
from sync.raw_uploads import RawSent, RawUploads
from sync.scheduler import Decision, Scheduler, SchedulerPolicy, TokenBucket, utc_day
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
            rate_Bps=lambda: link_rate_Bps(self.uploader.sizer, self.link),
            rtt_s=lambda: link_rtt_s(self.link),
            target_s=settings.chunk_target_s,
            min_chunk=settings.chunk_min_bytes,
            max_chunk=settings.chunk_max_bytes,
        )
        self.limits = BatchLimits(
            settings.batch_max_records, settings.batch_max_bytes, settings.batch_max_age_s
        )
        self._paused = False
        self._flush = False
        self._wake = asyncio.Event()
        self._idle = False
        self._task: asyncio.Task[None] | None = None
        self.meta = MetadataDelivery(
            outbox, self.state, self.client, self.limits, device_id, site_id, clock
        )
        self.next_stream = NextStream(
            outbox, self.limits, self.scheduler, self.meta, self.raw, clock
        )
        self.handshakes = Handshakes(
            outbox,
            self.state,
            self.client,
            self.link,
            self.meta,
            self.raw,
            device_id=device_id,
            site_id=site_id,
            models=models,
            interval_s=settings.handshake_interval_s,
            clock=clock,
        )
        self.beside = BesideRaw(
            self.handshakes,
            first_choice=self._first_choice,
            paused=lambda: self._paused,
            send_meta=self._send_meta_step,
            bodies_sent=self.meta.bodies_sent,
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
        await self.uploader.offsets_ahead.drop()
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
        self.handshakes.wanted = True
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
            last_handshake_at=self.handshakes.last_at,
            clock_skew_s=self.handshakes.clock_skew_s,
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
                if exc.unanswered:
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
        handshake: asyncio.Task[None] | None = None
        if self.handshakes.due() or not self.link.usable or self.outbox.history_unconfirmed:
            handshake = asyncio.create_task(self.handshakes.run())
        if not self.link.usable:  # the uploads cut when it went down ask beside the probe
            under_way = list(self.state.state.uploads.items())
            self.uploader.offsets_ahead.ask(under_way[: self.raw_lanes.plan.lanes])
        try:
            await self._work(handshake)
        except BaseException:
            if handshake is not None:
                handshake.cancel()
                await asyncio.gather(handshake, return_exceptions=True)
            await self.uploader.offsets_ahead.drop()  # the link may have cut since
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
                await self._sleep(min(wait_s, self.handshakes.next_at - self._clock()))
            finally:
                self._idle = False
            return
        if decision.stream.is_metadata:
            await self._send_meta_step(decision.stream, handshake)
        else:
            self.beside.handshake = handshake  # the raw uploads go beside it
            await self._send_raw(decision.stream)

    async def _send_meta_step(self, stream: Stream, handshake: asyncio.Task[None] | None) -> None:
        started = time.monotonic()
        try:
            batches = await self.meta.send_beside(
                stream, lambda: self._still_first(stream), handshake
            )
        finally:
            if self.meta.handshake_wanted:  # a 412: the cloud holds seqs we did not know of
                self.meta.handshake_wanted = False
                self.handshakes.wanted = True
        for sent in batches:
            self._sent(stream, sent.body_bytes, sent.records)
        if batches:
            nbytes = sum(b.body_bytes for b in batches)
            elapsed = time.monotonic() - started
            self.link.succeeded(self._clock(), nbytes=nbytes, seconds=elapsed)

    def _decide(self) -> tuple[Decision | None, float]:
        return self.next_stream.decide(flush=self._flush)

    def _first_choice(self) -> Stream | None:
        decision, _ = self._decide()
        return None if decision is None else decision.stream

    def _still_first(self, stream: Stream) -> bool:
        """Whether ``stream`` would still be chosen now (nothing more urgent arrived)."""
        return not self._paused and self._first_choice() is stream

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel (close hangs).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(None if math.isinf(seconds) else seconds):
                await self._wake.wait()

    def _failed(self, exc: BaseException) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}"
        unanswered = isinstance(exc, SyncError) and exc.unanswered
        self.link.failed(self._clock(), self._last_error, unreachable=unanswered)
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

    # ------------------------------------------------------------------ raw blobs

    async def _send_raw(self, stream: Stream) -> None:
        """Raw uploads of ``stream`` (several in flight) while it stays the first choice,
        with a handshake and metadata sends beside them (``sync.beside_raw``)."""
        await self.beside.around(
            self.raw_lanes.run(
                stream,
                lambda: self.beside.goes_on(stream),
                lambda: self.scheduler.budget_left(stream, self._clock()),
                self._raw_sent,
                lambda: self.link.succeeded(self._clock()),
            )
        )

    def _raw_sent(self, stream: Stream, sent: RawSent) -> None:
        self._sent(stream, sent.bytes_sent, 1 if sent.delivered else 0)
