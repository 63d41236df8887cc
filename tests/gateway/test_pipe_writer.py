"""The stdio transport's pipe writer finishes a line it has begun, whatever is cancelled:
a log relayed to an agent that reads slowly is given up after the relay's time bound
(``relay_send_timeout_seconds``), and a line cut there would run into the next one,
which the agent could not parse (an answer lost with it). On a real pipe."""

from __future__ import annotations

import os

import anyio
import pytest

from proctor.gateway.stdio import PipeWriter
from tests.gateway.conftest import WAIT

pytestmark = pytest.mark.anyio


async def test_a_cancelled_write_still_writes_its_whole_line() -> None:
    read_end, write_end = os.pipe()
    writer = PipeWriter(write_end)
    line = b"x" * (1 << 20) + b"\n"  # far more than a pipe holds
    got = bytearray()
    try:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tasks:
                scope = anyio.CancelScope()

                async def send() -> None:
                    with scope:
                        await writer.send(line)

                tasks.start_soon(send)
                await anyio.wait_readable(read_end)  # the line is begun
                scope.cancel()  # as a relay's time bound would
                while len(got) < len(line):
                    await anyio.wait_readable(read_end)
                    got += os.read(read_end, 1 << 16)
            await writer.send(b"next\n")  # the pipe is whole: the next line follows it
            await anyio.wait_readable(read_end)
            got += os.read(read_end, 16)
    finally:
        os.close(read_end)
        await writer.aclose()
    assert bytes(got) == line + b"next\n"
