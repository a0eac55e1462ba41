"""Helpers shared by the tests: waiting on conditions (never sleeping), and looking into queues."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import AbstractIncomingMessage


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> None:
    """Poll ``condition`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(interval)


async def queue_depth(amqp_url: str, queue: str) -> int:
    """Ready messages in ``queue`` (passive declare: fails if the queue does not exist)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count
        return int(count or 0)
    finally:
        await connection.close()


async def drain_queue(amqp_url: str, queue: str) -> list[AbstractIncomingMessage]:
    """Take every ready message out of ``queue`` (acked), for inspection."""
    connection = await aio_pika.connect(amqp_url)
    messages: list[AbstractIncomingMessage] = []
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        while (message := await declared.get(no_ack=False, fail=False)) is not None:
            await message.ack()
            messages.append(message)
    finally:
        await connection.close()
    return messages


async def wait_for_depth(amqp_url: str, queue: str, expected: int, *, timeout: float = 20.0) -> None:
    """Wait until ``queue`` holds exactly ``expected`` ready messages."""

    async def reached() -> bool:
        return await queue_depth(amqp_url, queue) == expected

    await wait_for(reached, timeout=timeout, interval=0.1, what=f"{expected} message(s) in {queue}")
