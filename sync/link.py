"""Link monitoring: online/offline/degraded, backoff with full jitter, a bandwidth estimate.

Pure: the engine reports each exchange with the cloud (``succeeded`` with the
bytes moved and the time taken, or ``failed``) and asks how long to wait
before trying again.  The clock and the random source are passed in.

States
    ``ONLINE``    the last exchange succeeded.
    ``DEGRADED``  exchanges fail but fewer than ``offline_after_failures`` in a row.
    ``OFFLINE``   that many consecutive failures; the engine's next try begins
                  with a handshake, after the wait below.

Two waits after a failure:

* an answer saying the service is in trouble (5xx, 429, 423) or a refusal:
  the backoff, "full jitter" (AWS architecture blog): the n-th consecutive
  failure waits ``uniform(0, min(backoff_max_s, backoff_initial_s * 2**n))``,
  so many devices coming back after an outage do not reconnect in lockstep;
* no answer at all (``CloudUnreachable``: the link is down): a probe, about
  every ``probe_interval_s`` while the outage is short, so a link that comes
  back is used within a fraction of a second rather than after a doubled wait.
  The interval grows with the outage (``PROBE_OUTAGE_SHARE`` of it, at most
  ``backoff_max_s``) and is jittered (0.5x-1.5x), so a fleet whose cloud was
  down for minutes comes back spread over a minute, as with the backoff.

A link cut within ``FLAKY_FOR_S`` is ``flaky``: the uploader then sends chunks
a cut does not void (see ``sync.uploader``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from sync.backoff import doubling_delay
from sync.settings import LinkSettings

__all__ = [
    "FLAKY_FOR_S",
    "PERMANENT_WAIT_S",
    "PROBE_OUTAGE_SHARE",
    "RETRYABLE_WAIT_S",
    "LinkMonitor",
    "LinkSnapshot",
    "LinkState",
]

RETRYABLE_WAIT_S = 0.01  # least wait after a retryable failure (no busy loop)
PERMANENT_WAIT_S = 1.0  # least wait after a failure that will not pass by itself
PROBE_OUTAGE_SHARE = 0.05  # a probe waits about this share of the outage so far
FLAKY_FOR_S = 600.0  # a link cut this recently (seconds) is flaky


class LinkState(StrEnum):
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class LinkSnapshot:
    state: LinkState
    consecutive_failures: int
    failures_total: int
    bandwidth_bps: float | None
    rtt_ms: float | None
    online_since: float | None
    last_error: str | None


class LinkMonitor:
    """Tracks the health of the link from the outcomes of real exchanges."""

    def __init__(
        self,
        settings: LinkSettings | None = None,
        *,
        offline_after_failures: int = 3,
        rng: random.Random | None = None,
        smoothing: float = 0.3,
    ) -> None:
        if offline_after_failures < 1:
            raise ValueError("offline_after_failures must be >= 1")
        if not 0 < smoothing <= 1:
            raise ValueError("smoothing must be in (0, 1]")
        self.settings = settings or LinkSettings()
        self._offline_after = offline_after_failures
        self._rng = rng or random.Random()
        self._alpha = smoothing
        self._state = LinkState.OFFLINE  # unknown until the first exchange succeeds
        self._failures = 0
        self._failures_total = 0
        self._bandwidth_Bps: float | None = None
        self._rtt_s: float | None = None
        self._online_since: float | None = None
        self._last_error: str | None = None
        self._down_since: float | None = None  # the first failure of this run of failures
        self._last_cut_at: float | None = None  # the last failure without an answer

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def usable(self) -> bool:
        """Whether to send data now (online or degraded; offline waits for a probe)."""
        return self._state is not LinkState.OFFLINE

    @property
    def bandwidth_bps(self) -> float | None:
        """Smoothed measured throughput in bits per second (None before any measurement)."""
        return None if self._bandwidth_Bps is None else self._bandwidth_Bps * 8

    def snapshot(self) -> LinkSnapshot:
        return LinkSnapshot(
            state=self._state,
            consecutive_failures=self._failures,
            failures_total=self._failures_total,
            bandwidth_bps=self.bandwidth_bps,
            rtt_ms=None if self._rtt_s is None else self._rtt_s * 1000,
            online_since=self._online_since,
            last_error=self._last_error,
        )

    def succeeded(self, now: float, *, nbytes: int = 0, seconds: float = 0.0) -> None:
        """An exchange completed.  Transfers of >= 16 KiB update the bandwidth estimate."""
        if self._state is not LinkState.ONLINE:
            self._online_since = now
        self._state = LinkState.ONLINE
        self._failures = 0
        if nbytes >= 16 << 10 and seconds > 0:
            self._bandwidth_Bps = self._smooth(self._bandwidth_Bps, nbytes / max(seconds, 1e-3))

    def observe_rtt(self, seconds: float) -> None:
        """A small request/response round trip (the handshake) took ``seconds``."""
        if seconds >= 0:
            self._rtt_s = self._smooth(self._rtt_s, seconds)

    def observe_throughput(self, nbytes: int, seconds: float) -> None:
        """Bytes moved in ``seconds`` by a transfer that was then cut (still a measurement)."""
        if nbytes >= 16 << 10 and seconds > 0:
            self._bandwidth_Bps = self._smooth(self._bandwidth_Bps, nbytes / max(seconds, 1e-3))

    def flaky(self, now: float) -> bool:
        """Whether the link was cut (an exchange got no answer) within ``FLAKY_FOR_S``."""
        return self._last_cut_at is not None and now - self._last_cut_at < FLAKY_FOR_S

    def failed(self, now: float, error: str, *, unreachable: bool = False) -> None:
        """An exchange failed at the transport level (refused, reset, timeout, 5xx);
        ``unreachable``: it got no answer at all (the link is down)."""
        if self._failures == 0:
            self._down_since = now
        if unreachable:
            self._last_cut_at = now
        self._failures += 1
        self._failures_total += 1
        self._last_error = error
        self._online_since = None if self._failures >= self._offline_after else self._online_since
        if self._failures >= self._offline_after:
            self._state = LinkState.OFFLINE
        elif self._state is LinkState.ONLINE:
            self._state = LinkState.DEGRADED

    def backoff_s(self) -> float:
        """How long to wait before the next attempt (0 when the last exchange succeeded)."""
        if self._failures == 0:
            return 0.0
        ceiling = doubling_delay(
            self._failures, self.settings.backoff_initial_s, self.settings.backoff_max_s
        )
        return self._rng.uniform(0, ceiling)

    def retry_after_s(self, *, retryable: bool) -> float:
        """The wait after a failed step: the jittered backoff, at least a token wait.

        A failure that is not ``retryable`` (a 4xx, a malformed answer, a bug) will
        not pass by itself, so it waits at least ``PERMANENT_WAIT_S``: the step is
        still tried again (records are never dropped), just not at link speed.
        """
        floor = RETRYABLE_WAIT_S if retryable else PERMANENT_WAIT_S
        return max(self.backoff_s(), floor)

    def probe_wait_s(self, now: float) -> float:
        """The wait before trying again after a failure without an answer (the link is down).

        About ``probe_interval_s`` (jittered 0.5x-1.5x) while the outage is short,
        ``PROBE_OUTAGE_SHARE`` of the outage so far once that is longer, and never
        a base above ``backoff_max_s``: a link back after a short cut is used
        within a fraction of a second, while after a long outage a fleet of
        devices comes back spread out."""
        down_for = 0.0 if self._down_since is None else max(0.0, now - self._down_since)
        settings = self.settings
        base = min(
            settings.backoff_max_s, max(settings.probe_interval_s, PROBE_OUTAGE_SHARE * down_for)
        )
        return self._rng.uniform(0.5 * base, 1.5 * base)

    def _smooth(self, old: float | None, sample: float) -> float:
        return sample if old is None else (1 - self._alpha) * old + self._alpha * sample
