"""An asyncio TCP proxy that behaves like a bad yard link (``tc netem`` is not available here).

Put it between the appliance and the ingest service::

    async with LinkEmulator(("127.0.0.1", ingest_port), LinkConditions(
        rtt_s=0.150, rate_bps=2_000_000)) as emu:
        url = f"http://127.0.0.1:{emu.port}"          # point the sync engine here
        emu.cut_after(40_000, Direction.UP)          # next cut: mid-request
        emu.set_online(False)                        # refuse and cut everything
        emu.start_flapping(offline_s=2, online_s=3)  # follow a schedule

Per direction, bytes are serialised at ``rate_bps`` (shared by all connections,
like one physical link) and delivered ``rtt_s/2`` later (pipelined, so
throughput is not limited to one window per RTT); at most
``max_in_flight`` bytes wait in the emulated pipe, which gives backpressure
like a TCP window.  ``blackhole`` keeps connections open but forwards nothing.
``cut_after(n, direction)`` aborts every connection once ``n`` more bytes have
crossed in that direction (``Direction.DOWN`` with n=1 cuts after the server
has processed a request but before the client sees the answer).

Demo: ``python -m sync.linkemu --target 127.0.0.1:8080 --listen 9000 --rate 2e6
--rtt-ms 150 --flap 5,10``; ``--stats FILE`` keeps the byte counters (bytes that
crossed, per direction), cuts and seconds online in FILE as JSON, rewritten every
0.1 s, stamped with ``time.monotonic()`` (one clock for every process of the host).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Direction", "LinkConditions", "LinkEmulator", "LinkEmuStats"]

_READ_SIZE = 16 << 10
DEFAULT_WINDOW = 256 << 10  # bytes in the pipe per connection and direction


class Direction(StrEnum):
    UP = "up"  # client -> server
    DOWN = "down"  # server -> client
    ANY = "any"


@dataclass(slots=True)
class LinkConditions:
    """What the link does now; change fields at any time (they apply to the next bytes)."""

    rtt_s: float = 0.0
    rate_bps: float | None = None  # per direction; None: unlimited
    online: bool = True  # False: new connections are refused, open ones are cut
    blackhole: bool = False  # connections stay open, nothing is forwarded
    max_in_flight: int = DEFAULT_WINDOW


@dataclass(slots=True)
class LinkEmuStats:
    connections: int = 0
    refused: int = 0
    cuts: int = 0
    bytes: dict[Direction, int] = field(
        default_factory=lambda: {Direction.UP: 0, Direction.DOWN: 0}
    )


@dataclass(slots=True)
class _Cut:
    remaining: int
    direction: Direction
    min_up_bytes: int = 0  # only on a connection that already carried this much upstream


class _Pipe:
    """One direction of one connection: serialise, delay, deliver."""

    def __init__(self, emu: LinkEmulator, direction: Direction) -> None:
        self.emu = emu
        self.direction = direction
        self.queue: deque[tuple[float, bytes]] = deque()
        self.in_flight = 0
        self.changed = asyncio.Event()
        self.eof = False

    async def pump_in(self, reader: asyncio.StreamReader, conn: _Connection) -> None:
        cond = self.emu.conditions
        while True:
            while cond.blackhole or self.in_flight >= cond.max_in_flight:
                await self._wait_change(0.05)
                cond = self.emu.conditions
            data = await reader.read(_READ_SIZE)
            if not data:
                break
            data = self.emu._take_cut_budget(self.direction, data, conn)
            now = time.monotonic()
            # One link: every connection shares the rate of this direction.
            start = max(now, self.emu._link_free_at[self.direction])
            serialise = 0.0 if cond.rate_bps is None else len(data) * 8 / cond.rate_bps
            done = self.emu._link_free_at[self.direction] = start + serialise
            self.queue.append((done + cond.rtt_s / 2, data))
            self.in_flight += len(data)
            self.changed.set()
            if conn.cutting:
                break
        self.eof = True
        self.changed.set()

    async def pump_out(self, writer: asyncio.StreamWriter, conn: _Connection) -> None:
        while True:
            if not self.queue:
                if self.eof:
                    break
                await self._wait_change(None)
                continue
            deliver_at, data = self.queue[0]
            delay = deliver_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            while self.emu.conditions.blackhole and not conn.cutting:
                await self._wait_change(0.05)
            self.queue.popleft()
            self.in_flight -= len(data)
            self.changed.set()
            writer.write(data)
            self.emu.stats.bytes[self.direction] += len(data)
            await writer.drain()
        if conn.cutting:
            conn.abort()
        elif writer.can_write_eof():
            writer.write_eof()

    async def _wait_change(self, timeout: float | None) -> None:
        self.changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.changed.wait()


class _Connection:
    def __init__(
        self,
        emu: LinkEmulator,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.emu = emu
        self.client_reader, self.client_writer = client
        self.server_reader, self.server_writer = server
        self.cutting = False
        self.up_bytes = 0

    async def run(self) -> None:
        up, down = _Pipe(self.emu, Direction.UP), _Pipe(self.emu, Direction.DOWN)
        tasks = [
            asyncio.create_task(up.pump_in(self.client_reader, self)),
            asyncio.create_task(up.pump_out(self.server_writer, self)),
            asyncio.create_task(down.pump_in(self.server_reader, self)),
            asyncio.create_task(down.pump_out(self.client_writer, self)),
        ]
        try:
            await asyncio.gather(*tasks)
        except (ConnectionError, OSError):
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.abort()

    def abort(self) -> None:
        """Reset both sides (RST where the OS allows), like a link that drops."""
        self.cutting = True
        for writer in (self.client_writer, self.server_writer):
            transport = writer.transport
            if not transport.is_closing():
                transport.abort()


class LinkEmulator:
    """The proxy.  ``async with`` starts and stops it; ``port`` is where clients connect."""

    def __init__(
        self,
        target: tuple[str, int],
        conditions: LinkConditions | None = None,
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
    ) -> None:
        self.target = target
        self.conditions = conditions or LinkConditions()
        self.stats = LinkEmuStats()
        self._listen = listen
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._cut: _Cut | None = None
        self._link_free_at = {Direction.UP: 0.0, Direction.DOWN: 0.0}
        self._flapper: asyncio.Task[None] | None = None
        self._online_total_s = 0.0
        self._online_since: float | None = time.monotonic() if self.conditions.online else None

    def online_seconds(self, now: float | None = None) -> float:
        """Seconds the link was online since the emulator was made (the capacity's time)."""
        now = time.monotonic() if now is None else now
        since = self._online_since
        return self._online_total_s + (0.0 if since is None else max(0.0, now - since))

    def stats_json(self) -> dict[str, float]:
        """The counters as ``--stats`` writes them."""
        now = time.monotonic()
        return {
            "t": now,
            "up": self.stats.bytes[Direction.UP],
            "down": self.stats.bytes[Direction.DOWN],
            "online_s": self.online_seconds(now),
            "cuts": self.stats.cuts,
            "connections": self.stats.connections,
        }

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{self._listen[0]}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, *self._listen)

    async def close(self) -> None:
        await self.stop_flapping()
        if self._server is not None:
            self._server.close()
        self._abort_all()
        if self._tasks:  # handlers end once their transports are aborted
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> LinkEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ controls

    def set_online(self, online: bool) -> None:
        now = time.monotonic()
        if online and self._online_since is None:
            self._online_since = now
        elif not online and self._online_since is not None:
            self._online_total_s += now - self._online_since
            self._online_since = None
        self.conditions.online = online
        if not online:
            self.cut_all()

    def cut_after(
        self, nbytes: int, direction: Direction = Direction.ANY, *, min_up_bytes: int = 0
    ) -> None:
        """Abort every open connection once ``nbytes`` more bytes crossed ``direction``.

        With ``min_up_bytes``, only bytes of a connection that already sent that
        much upstream count: ``cut_after(1, Direction.DOWN, min_up_bytes=65536)``
        loses the answer to a large request (an upload chunk), not to a small one.
        """
        if nbytes < 1:
            raise ValueError("nbytes must be >= 1")
        self._cut = _Cut(nbytes, direction, min_up_bytes)

    def cut_all(self) -> None:
        """Abort every open connection now (counted as one cut when any was open)."""
        if self._connections:
            self.stats.cuts += 1
        self._abort_all()

    def _abort_all(self) -> None:
        for conn in list(self._connections):
            conn.abort()

    def start_flapping(self, offline_s: float, online_s: float) -> None:
        """Go offline for ``offline_s``, online for ``online_s``, and so on until stopped."""
        if self._flapper is not None:
            self._flapper.cancel()
        self._flapper = asyncio.create_task(self._flap([(offline_s, online_s)], repeat=True))

    def follow_schedule(self, schedule: list[tuple[float, float]]) -> None:
        """Follow ``[(offline_s, online_s), ...]`` once, then stay online."""
        if self._flapper is not None:
            self._flapper.cancel()
        self._flapper = asyncio.create_task(self._flap(schedule, repeat=False))

    async def stop_flapping(self) -> None:
        if self._flapper is not None:
            self._flapper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flapper
            self._flapper = None
        self.set_online(True)

    async def _flap(self, schedule: list[tuple[float, float]], *, repeat: bool) -> None:
        while True:
            for offline_s, online_s in schedule:
                self.set_online(False)
                await asyncio.sleep(offline_s)
                self.set_online(True)
                await asyncio.sleep(online_s)
            if not repeat:
                return

    # ------------------------------------------------------------------ internals

    def _take_cut_budget(self, direction: Direction, data: bytes, conn: _Connection) -> bytes:
        if direction is Direction.UP:
            conn.up_bytes += len(data)
        cut = self._cut
        if cut is None or cut.direction not in (direction, Direction.ANY):
            return data
        if conn.up_bytes < cut.min_up_bytes:
            return data
        if len(data) < cut.remaining:
            cut.remaining -= len(data)
            return data
        self._cut = None
        kept = data[: cut.remaining]
        conn.cutting = True
        self.stats.cuts += 1
        for other in list(self._connections):
            if other is not conn:
                other.abort()
        return kept

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.conditions.online:
            self.stats.refused += 1
            writer.transport.abort()
            return
        try:
            server = await asyncio.open_connection(*self.target)
        except OSError:
            self.stats.refused += 1
            writer.transport.abort()
            return
        self.stats.connections += 1
        conn = _Connection(self, (reader, writer), server)
        self._connections.add(conn)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)
            if task is not None:
                self._tasks.discard(task)


def _parse_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


async def _serve(args: argparse.Namespace) -> None:
    conditions = LinkConditions(
        rtt_s=args.rtt_ms / 1000, rate_bps=args.rate, max_in_flight=args.window_bytes
    )
    emu = LinkEmulator(_parse_hostport(args.target), conditions, listen=("127.0.0.1", args.listen))
    async with emu:
        if args.flap:
            offline_s, online_s = (float(x) for x in args.flap.split(","))
            emu.start_flapping(offline_s, online_s)
        print(f"linkemu: 127.0.0.1:{emu.port} -> {args.target}", flush=True)
        while True:
            if args.stats:
                _write_stats(args.stats, emu.stats_json())
            await asyncio.sleep(0.1)


def _write_stats(path: str, stats: dict[str, float]) -> None:
    temp = f"{path}.tmp"
    with open(temp, "w") as file:
        json.dump(stats, file)
    os.replace(temp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sync.linkemu", description=__doc__)
    parser.add_argument("--target", required=True, help="HOST:PORT of the real server")
    parser.add_argument("--listen", type=int, default=0, help="local port (0: any)")
    parser.add_argument("--rate", type=float, default=None, help="bits per second per direction")
    parser.add_argument("--rtt-ms", type=float, default=0.0)
    parser.add_argument("--flap", default="", help="OFFLINE_S,ONLINE_S")
    parser.add_argument(
        "--window-bytes",
        type=int,
        default=DEFAULT_WINDOW,
        help="bytes one connection may have in the pipe per direction (its TCP window)",
    )
    parser.add_argument("--stats", default="", help="FILE: counters as JSON, every 0.1 s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
