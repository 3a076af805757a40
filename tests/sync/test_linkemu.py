"""The link emulator over real loopback sockets: pass-through, rate, latency, cuts, outages."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from sync.linkemu import Direction, LinkConditions, LinkEmulator


@dataclass
class EchoServer:
    """Echoes every byte back and remembers how many it received per connection."""

    received: list[int] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(self.received)
        self.received.append(0)
        try:
            while data := await reader.read(65536):
                self.received[index] += len(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.transport.abort()

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    echo = EchoServer()
    echo.server = await asyncio.start_server(echo.handle, "127.0.0.1", 0)
    yield echo
    echo.server.close()
    await echo.server.wait_closed()


@contextlib.asynccontextmanager
async def connected(
    emu: LinkEmulator,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


async def test_pass_through_is_byte_exact(echo: EchoServer) -> None:
    payload = bytes(range(256)) * 2000
    async with LinkEmulator(("127.0.0.1", echo.port)) as emu, connected(emu) as (reader, writer):
        writer.write(payload)
        await writer.drain()
        got = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
    assert got == payload
    assert emu.stats.bytes[Direction.UP] == len(payload)
    assert emu.stats.bytes[Direction.DOWN] == len(payload)


async def test_rate_cap_and_latency(echo: EchoServer) -> None:
    conditions = LinkConditions(rtt_s=0.2, rate_bps=800_000)  # 100 kB/s
    emu = LinkEmulator(("127.0.0.1", echo.port), conditions)
    async with emu, connected(emu) as (reader, writer):
        start = time.monotonic()
        writer.write(b"x")
        await reader.readexactly(1)
        rtt = time.monotonic() - start
        start = time.monotonic()
        writer.write(b"y" * 50_000)
        await asyncio.wait_for(reader.readexactly(50_000), 10)
        transfer = time.monotonic() - start
    assert 0.2 <= rtt < 0.5
    # 50 kB at 100 kB/s each way (pipelined) + one RTT: about 0.7 s.
    assert 0.6 <= transfer < 1.5


async def test_cut_mid_upload(echo: EchoServer) -> None:
    async with LinkEmulator(("127.0.0.1", echo.port)) as emu, connected(emu) as (reader, writer):
        emu.cut_after(10_000, Direction.UP)
        writer.write(b"z" * 50_000)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(50_000), 5)
    await asyncio.sleep(0.05)
    assert echo.received == [10_000]
    assert emu.stats.cuts == 1


async def test_cut_after_request_before_response(echo: EchoServer) -> None:
    async with LinkEmulator(("127.0.0.1", echo.port)) as emu, connected(emu) as (reader, writer):
        emu.cut_after(1, Direction.DOWN)
        writer.write(b"q" * 5000)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(5000), 5)
    await asyncio.sleep(0.05)
    assert echo.received == [5000]  # the server got the whole request


async def test_offline_refuses_and_cuts(echo: EchoServer) -> None:
    async with LinkEmulator(("127.0.0.1", echo.port)) as emu:
        async with connected(emu) as (reader, writer):
            writer.write(b"a")
            assert await reader.readexactly(1) == b"a"
            emu.set_online(False)
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                writer.write(b"b")
                await asyncio.wait_for(reader.readexactly(1), 2)
        async with connected(emu) as (reader, writer):
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(reader.readexactly(1), 2)
        assert emu.stats.refused == 1
        emu.set_online(True)
        async with connected(emu) as (reader, writer):
            writer.write(b"c")
            assert await asyncio.wait_for(reader.readexactly(1), 2) == b"c"


async def test_blackhole_holds_bytes_until_lifted(echo: EchoServer) -> None:
    async with LinkEmulator(("127.0.0.1", echo.port)) as emu, connected(emu) as (reader, writer):
        emu.conditions.blackhole = True
        writer.write(b"hello")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(5), 0.3)
        emu.conditions.blackhole = False
        assert await asyncio.wait_for(reader.readexactly(5), 2) == b"hello"


async def test_flap_schedule(echo: EchoServer) -> None:
    async with LinkEmulator(("127.0.0.1", echo.port)) as emu:
        emu.follow_schedule([(0.3, 0.3)])
        await asyncio.sleep(0.1)
        assert not emu.conditions.online
        await asyncio.sleep(0.35)
        assert emu.conditions.online
        emu.start_flapping(0.2, 0.2)
        await asyncio.sleep(0.05)
        assert not emu.conditions.online
        await emu.stop_flapping()
        assert emu.conditions.online
