"""Technician actions on the local API, each audited (``appliance.audit``) before it runs.

Sync controls, mounted when ``sync.cloud_url`` is set (``add_sync_routes``):

* ``POST /v1/sync/pause`` / ``POST /v1/sync/resume``: stop / restart sending.
* ``POST /v1/sync/now``: handshake now, send young batches, skip the backoff.
* ``PUT /v1/sync/bandwidth`` with ``{"bps": <number> | null}``: global upload cap in
  bits per second (a finite number >= 1; null goes back to the configured cap); with
  ``"for_s": <seconds>`` (1..604800) the cap is temporary: when it runs out the
  configured cap is back.  Any other body is a 400.
* ``GET /v1/sync``: the engine's progress (also embedded in ``/v1/status``), plus
  ``bandwidth_cap_until`` (epoch seconds of a temporary cap's end, else null).

Always mounted (``add_technician_routes``):

* ``GET /v1/audit``: the recent audit records of this run.
* ``POST /v1/support-bundle``: a ``.tar.gz`` safe to mail to support
  (``appliance.support_bundle``: no token, no key).

An action whose audit record the outbox refuses is not done: 503 ``audit_refused``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from appliance.audit import AuditTrail
from appliance.errors import error_summary
from appliance.support_bundle import bundle_for_daemon
from sync.engine import SyncEngine
from sync.errors import SyncError
from sync.outbox import Outbox

if TYPE_CHECKING:
    from appliance.daemon import Daemon

__all__ = [
    "AUDIT_TRAIL",
    "TemporaryCap",
    "add_daemon_technician_routes",
    "add_sync_routes",
    "add_technician_routes",
    "audit_trail",
]

_MAX_CAP_FOR_S = 7 * 86400.0
AUDIT_TRAIL = web.AppKey("audit_trail", AuditTrail)  # one per app: /v1/audit shows them all


def audit_trail(
    app: web.Application, outbox: Outbox, *, device_id: str, site_id: str
) -> AuditTrail:
    """The app's audit trail (made at the first call, shared by every route module)."""
    if AUDIT_TRAIL not in app:
        app[AUDIT_TRAIL] = AuditTrail(outbox, device_id=device_id, site_id=site_id)
    return app[AUDIT_TRAIL]


class TemporaryCap:
    """A bandwidth cap that falls back to the configured one when its time runs out."""

    def __init__(self, engine: SyncEngine, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._configured = engine.bucket.rate_bps  # the cap of site.toml (None: no cap)
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self.until: float | None = None  # epoch seconds, while a temporary cap holds

    def set(self, bps: float | None, for_s: float | None) -> None:
        self._cancel()
        if bps is None:  # lifting a cap means back to the configured one
            self._engine.set_bandwidth_cap(self._configured)
            return
        self._engine.set_bandwidth_cap(bps)
        if for_s is not None:
            self.until = self._clock() + for_s
            self._timer = asyncio.get_running_loop().call_later(for_s, self._expire)

    def _expire(self) -> None:
        self._timer, self.until = None, None
        self._engine.set_bandwidth_cap(self._configured)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self.until = None, None


def _refused(exc: Exception) -> web.Response:
    return web.json_response(
        {
            "error": "audit_refused",
            "detail": f"the action was not done: its audit record could not be stored"
            f" ({error_summary(exc)})",
        },
        status=503,
    )


async def _audited(audit: AuditTrail, action: str, detail: dict[str, Any]) -> web.Response | None:
    """Store the audit record; a response to return instead of acting when that fails."""
    try:
        await audit.record(action, detail)
    except SyncError as exc:  # OutboxFull, OutboxDiskFull, closed...: all typed
        return _refused(exc)
    return None


def add_sync_routes(app: web.Application, engine: SyncEngine) -> TemporaryCap:
    trail = audit_trail(app, engine.outbox, device_id=engine.device_id, site_id=engine.site_id)
    cap = TemporaryCap(engine)

    def progress() -> web.Response:
        body = engine.progress().model_dump(mode="json")
        body["bandwidth_cap_until"] = cap.until
        return web.json_response(body)

    def action(
        name: str, run: Callable[[], None]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            refused = await _audited(trail, name, {})
            if refused is not None:
                return refused
            run()
            return progress()

        return handler

    async def get(request: web.Request) -> web.Response:
        return progress()

    async def bandwidth(request: web.Request) -> web.Response:
        problem = _bandwidth_problem(await request.read())
        if isinstance(problem, str):
            return web.json_response({"error": "bad_request", "detail": problem}, status=400)
        refused = await _audited(
            trail, "sync.bandwidth_cap", {"bps": problem.bps, "for_s": problem.for_s}
        )
        if refused is not None:
            return refused
        cap.set(problem.bps, problem.for_s)
        return progress()

    app.router.add_post("/v1/sync/pause", action("sync.pause", engine.pause))
    app.router.add_post("/v1/sync/resume", action("sync.resume", engine.resume))
    app.router.add_post("/v1/sync/now", action("sync.now", engine.sync_now))
    app.router.add_put("/v1/sync/bandwidth", bandwidth)
    app.router.add_get("/v1/sync", get)
    return cap


def add_technician_routes(
    app: web.Application,
    outbox: Outbox,
    *,
    device_id: str,
    site_id: str,
    bundle: Callable[[AuditTrail], Awaitable[bytes]],
) -> None:
    """``GET /v1/audit`` and ``POST /v1/support-bundle`` (``bundle(audit)`` builds it)."""
    audit = audit_trail(app, outbox, device_id=device_id, site_id=site_id)

    async def get_audit(request: web.Request) -> web.Response:
        return web.json_response({"records": audit.recent()})

    async def support_bundle(request: web.Request) -> web.Response:
        refused = await _audited(audit, "support_bundle.export", {})
        if refused is not None:
            return refused
        body = await bundle(audit)
        name = f"yardlink-support-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.tar.gz"
        return web.Response(
            body=body,
            headers={
                "Content-Type": "application/gzip",
                "Content-Disposition": f'attachment; filename="{name}"',
            },
        )

    app.router.add_get("/v1/audit", get_audit)
    app.router.add_post("/v1/support-bundle", support_bundle)


def add_daemon_technician_routes(app: web.Application, daemon: Daemon) -> None:
    """The ``API_ROUTES`` entry (appliance.api_server): the daemon's audit and bundle."""
    if daemon.outbox is None:
        return
    site = daemon.config.site
    add_technician_routes(
        app,
        daemon.outbox,
        device_id=site.device_id,
        site_id=site.site_id,
        bundle=functools.partial(bundle_for_daemon, daemon.config, daemon.status),
    )


_BANDWIDTH_SHAPE = 'send {"bps": <bits per second> or null, "for_s": <seconds> (optional)}'


@dataclass(frozen=True, slots=True)
class _Cap:
    bps: float | None
    for_s: float | None


def _finite(value: object, low: float, high: float) -> float | str:
    """``value`` as a float within [low, high], or what is wrong with it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"got {type(value).__name__}"
    try:
        number = float(value)
    except OverflowError:
        return "got a number too large"
    if not math.isfinite(number) or not low <= number <= high:
        return f"got {number}"
    return number


def _bandwidth_problem(raw: bytes) -> _Cap | str:
    """The cap a ``PUT /v1/sync/bandwidth`` body asks for, or what is wrong with it."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return f"the body is not JSON: {_BANDWIDTH_SHAPE}"
    if not isinstance(body, dict) or "bps" not in body:
        return _BANDWIDTH_SHAPE
    unknown = sorted(set(body) - {"bps", "for_s"})
    if unknown:
        return f"unknown field(s) {', '.join(map(repr, unknown))}: {_BANDWIDTH_SHAPE}"
    for_s: float | None = None
    if body.get("for_s") is not None:
        checked = _finite(body["for_s"], 1.0, _MAX_CAP_FOR_S)
        if isinstance(checked, str):
            return f"for_s must be a number of seconds from 1 to {_MAX_CAP_FOR_S:.0f} ({checked})"
        for_s = checked
    if body["bps"] is None:
        return _Cap(None, None)
    bps = _finite(body["bps"], 1.0, math.inf)
    if isinstance(bps, str):
        return f"bps must be a finite number of bits per second >= 1, or null ({bps})"
    return _Cap(bps, for_s)
