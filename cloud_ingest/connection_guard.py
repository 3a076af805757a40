"""Connections that cannot be held open by a slow or greedy client.

aiohttp waits for a request head as long as its keep-alive timeout (an hour by
default) and for a body as long as the client keeps the socket open, so a few
hundred half-sent requests held a server's connections indefinitely.  Here:

* a request head must be complete within ``header_timeout_s`` of the connection
  opening or of the previous answer (aiohttp's keep-alive timer, shortened: it
  closes a connection whose handler is still waiting for a whole head);
* while a handler is running and its body is not complete, a connection that
  brings no byte for ``body_stall_timeout_s`` is closed (not when our side has
  paused reading: a full buffer is our doing, not the client's);
* one client address holds at most ``max_connections_per_address`` connections;
  the next gets a JSON 503 and is closed.

Each closing is one rate-limited warning line (``sync.shared.json_error_runner``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sync.shared import json_error_runner
from sync.shared.json_error_runner import JsonErrorRequestHandler

__all__ = ["ConnectionGuard", "GuardedRequestHandler"]


@dataclass
class ConnectionGuard:
    """Limits shared by every connection of one server, and its per-address counts."""

    header_timeout_s: float
    body_stall_timeout_s: float
    max_connections_per_address: int
    open_per_address: Counter[str] = field(default_factory=Counter)

    def admit(self, address: str) -> bool:
        if self.open_per_address[address] >= self.max_connections_per_address:
            return False
        self.open_per_address[address] += 1
        return True

    def release(self, address: str) -> None:
        self.open_per_address[address] -= 1
        if self.open_per_address[address] <= 0:
            del self.open_per_address[address]


_BUSY_BODY = (
    b'{"error": "too_many_connections", "detail": "too many connections from this address"}'
)
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 5\r\nConnection: close\r\nContent-Length: "
    + str(len(_BUSY_BODY)).encode()
    + b"\r\n\r\n"
    + _BUSY_BODY
)


class GuardedRequestHandler(JsonErrorRequestHandler):
    """The service's connection handler: JSON errors plus the limits of a ``ConnectionGuard``."""

    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        kwargs["keepalive_timeout"] = guard.header_timeout_s
        super().__init__(*args, **kwargs)
        self._guard = guard
        self._address: str | None = None
        self._last_byte_at = 0.0
        self._stall_check: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self._guard.admit(address):
            json_error_runner.CLIENT_FAULTS.warn(
                "refused a connection from %s: %d open already",
                address,
                self._guard.max_connections_per_address,
            )
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(_BUSY)
            self.force_close()
            return
        self._address = address
        self._last_byte_at = self._loop.time()
        self._schedule_stall_check()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._stall_check is not None:
            self._stall_check.cancel()
            self._stall_check = None
        if self._address is not None:
            self._guard.release(self._address)
            self._address = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._last_byte_at = self._loop.time()
        super().data_received(data)

    def _schedule_stall_check(self) -> None:
        interval = max(self._guard.body_stall_timeout_s / 4, 0.05)
        self._stall_check = self._loop.call_later(interval, self._check_stall)

    def _check_stall(self) -> None:
        self._stall_check = None
        if self._address is None or self.transport is None:
            return
        request = self._current_request
        waiting_for_body = (
            request is not None and not request.content.is_eof() and not self._reading_paused
        )
        stalled_for = self._loop.time() - self._last_byte_at
        if waiting_for_body and stalled_for > self._guard.body_stall_timeout_s:
            json_error_runner.CLIENT_FAULTS.warn(
                "closed a connection from %s: no body byte for %.0f s", self._address, stalled_for
            )
            self.force_close()
            return
        self._schedule_stall_check()
