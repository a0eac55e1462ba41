"""Helpers shared by the tests: waiting on conditions (never sleeping), looking into queues, and collecting
the source runs the pulling connectors publish."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from skolsynk.contracts import Envelope
from skolsynk.contracts.source import SourceRecordPage, SourceRunCompleted, SourceRunStarted
from skolsynk.domain.ss12000 import EntityKind
from skolsynk.messaging import MessageContext, Topology

if TYPE_CHECKING:
    from skolsynk.service import ServiceApp


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


def queue_names(topology: Topology) -> list[str]:
    """Every queue a topology declares: work queues, their dead letters and retry queues."""
    return [
        name
        for spec in topology.queues
        for name in (
            spec.name,
            spec.dead_letter_queue,
            *(spec.retry_queue(n) for n in range(len(spec.retry_delays_seconds))),
        )
    ]


async def peek_queues(amqp_url: str, names: Iterable[str]) -> dict[str, list[bytes]]:
    """The bodies of every message waiting in each queue, read without taking them (closing the connection
    hands them back, in an order of the broker's choosing on a quorum queue): queue -> bodies. A queue
    nobody declared holds nothing."""
    found: dict[str, list[bytes]] = {}
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in sorted(set(names)):
            try:
                queue = await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                channel = await connection.channel()
                continue
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                found.setdefault(name, []).append(message.body)
    return found


async def delete_topology(amqp_url: str, topology: Topology) -> None:
    """Delete a test's queues and exchanges: quorum queues are broker processes, and hundreds of
    leftovers slow the broker down for every later test."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in queue_names(topology):
            await channel.queue_delete(name)
        for exchange in topology.exchanges:
            await channel.exchange_delete(exchange)


@dataclass
class Collected:
    """Every source message that reached the normaliser's queue, by run."""

    envelopes: list[Envelope] = field(default_factory=list)

    async def collect(self, envelope: Envelope, context: MessageContext) -> None:
        self.envelopes.append(envelope)

    async def start_collector(self, app: ServiceApp) -> ServiceApp:
        """Consume the normaliser's ``source-events`` queue on ``app`` into this collection; start ``app``."""
        app.add_consumer(app.queue_name("normaliser", "source-events"), self.collect, idempotent=False)
        await app.start()
        return app

    def of(self, run_id: uuid.UUID) -> list[Envelope]:
        return [e for e in self.envelopes if e.payload.get("run_id") == str(run_id)]

    def started(self, run_id: uuid.UUID) -> SourceRunStarted:
        return next(
            SourceRunStarted.from_envelope(e) for e in self.of(run_id) if e.message_type == "source.run.started"
        )

    def pages(self, run_id: uuid.UUID) -> list[SourceRecordPage]:
        pages = [SourceRecordPage.from_envelope(e) for e in self.of(run_id) if e.message_type == "source.records"]
        return sorted(pages, key=lambda p: p.page)

    def completed(self, run_id: uuid.UUID) -> SourceRunCompleted | None:
        done = [e for e in self.of(run_id) if e.message_type == "source.run.completed"]
        return SourceRunCompleted.from_envelope(done[0]) if done else None

    def complete(self, run_id: uuid.UUID) -> bool:
        done = self.completed(run_id)
        return (
            done is not None
            and len(self.pages(run_id)) == done.pages
            and any(e.message_type == "source.run.started" for e in self.of(run_id))
        )

    def runs(self) -> list[uuid.UUID]:
        return list(dict.fromkeys(uuid.UUID(e.payload["run_id"]) for e in self.envelopes))

    def records(self, run_id: uuid.UUID) -> dict[tuple[EntityKind, str], dict[str, Any]]:
        return {(r.kind, r.key): r.data for p in self.pages(run_id) for r in p.records}

    def deletions(self, run_id: uuid.UUID) -> set[tuple[EntityKind, str]]:
        return {(d.kind, d.key) for p in self.pages(run_id) for d in p.deletions}
