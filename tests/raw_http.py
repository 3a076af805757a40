"""Send bytes no HTTP client would send, and read the server's whole answer."""

from __future__ import annotations

import asyncio


async def raw_exchange(
    host: str, port: int, payload: bytes, *, timeout: float = 10.0
) -> tuple[int, bytes, bytes]:
    """Write ``payload`` on a fresh connection; returns (status, head, body) of the answer."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(payload)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=timeout)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head, body
