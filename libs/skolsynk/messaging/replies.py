"""Answers to a question asked over RabbitMQ (request/reply), for the rare call that needs one now: the
admin's "test connection", which only the connector of the source's kind can answer.

A :class:`ReplyInbox` is one exclusive, auto-deleted, server-named queue per process: the request names it
(``reply_to`` in the contract) and the answer arrives there with the request's message id as its
correlation id. Nothing else is kept: a process that restarts loses its open questions, and their late
answers go nowhere (the queue is gone, so the answer is unroutable and the connector drops it). Answers are
consumed without acknowledgement: they are worth nothing once the question has timed out.
"""

from __future__ import annotations

import asyncio
import uuid

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel
from pydantic import ValidationError

from skolsynk.contracts.envelope import Envelope
from skolsynk.logging import get_logger
from skolsynk.messaging.broker import Broker

log = get_logger(__name__)


class ReplyInbox:
    """The answers to this process's questions. :meth:`start` (once connected), :meth:`expect` before the
    question is published, :meth:`wait` for its answer, :meth:`close`."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._waiting: dict[uuid.UUID, asyncio.Future[Envelope]] = {}
        self._lock = asyncio.Lock()

    @property
    def queue_name(self) -> str:
        if self._queue is None:
            raise RuntimeError("the reply inbox is not started")
        return self._queue.name

    async def start(self) -> None:
        """Declare the queue and consume it (idempotent; the first question starts it when nobody did)."""
        async with self._lock:
            if self._queue is not None:
                return
            self._channel = await self._broker.channel(confirms=False)
            self._queue = await self._channel.declare_queue("", exclusive=True, auto_delete=True)
            await self._queue.consume(self._deliver, no_ack=True)

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        try:
            envelope = Envelope.model_validate_json(message.body)
        except ValidationError:
            log.warning("reply_unreadable")
            return
        future = self._waiting.pop(envelope.correlation_id, None) if envelope.correlation_id else None
        if future is None or future.done():
            log.info("reply_not_awaited", message_type=envelope.message_type)  # it came after its deadline
            return
        future.set_result(envelope)

    def expect(self, question_id: uuid.UUID) -> None:
        """Be ready for the answer to the question with message id ``question_id`` (call before publishing,
        so a fast answer is not missed)."""
        self._waiting[question_id] = asyncio.get_running_loop().create_future()

    async def wait(self, question_id: uuid.UUID, timeout: float) -> Envelope:
        """The answer; :class:`TimeoutError` when none came within ``timeout`` seconds."""
        future = self._waiting[question_id]
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._waiting.pop(question_id, None)

    def forget(self, question_id: uuid.UUID) -> None:
        """The question was not asked after all (publishing it failed)."""
        self._waiting.pop(question_id, None)

    async def close(self) -> None:
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        self._channel = self._queue = None
