"""HTTP/1.1 as bytes on a socket, for tests of what a server's parser takes: what the
server answers on one connection, up to its close."""

from __future__ import annotations

import asyncio

import anyio


async def exchange(port: int, *writes: bytes, host: str = "127.0.0.1",
                   wait: float = 30) -> bytes:
    """What the server on ``host:port`` answers to ``writes`` sent on one connection, up
    to its close (the test fails after ``wait`` seconds if it never closes); an answer
    cut by a reset ends there."""
    with anyio.fail_after(wait):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for data in writes:
                writer.write(data)
                await writer.drain()
            return await reader.read()
        except ConnectionError:  # refused while still sending, or reset
            return b""
        finally:
            writer.close()
