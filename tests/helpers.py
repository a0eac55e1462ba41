"""Helpers shared by the tests: waiting on conditions (never sleeping), and looking into queues."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from skolsynk.messaging import Topology


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


async def delete_topology(amqp_url: str, topology: Topology) -> None:
    """Delete a test's queues and exchanges: quorum queues are broker processes, and hundreds of
    leftovers slow the broker down for every later test."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        names = [
            name
            for spec in topology.queues
            for name in (
                spec.name,
                spec.dead_letter_queue,
                *(spec.retry_queue(n) for n in range(len(spec.retry_delays_seconds))),
            )
        ]
        for name in names:
            await channel.queue_delete(name)
        for exchange in topology.exchanges:
            await channel.exchange_delete(exchange)
