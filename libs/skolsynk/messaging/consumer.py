"""Consuming a work queue: manual acks, bounded prefetch, idempotency, retries, DLQ, graceful stop.

What happens to a delivery:

===========================================  ===================================================
envelope does not parse                      dead-lettered at once, reason in headers
already in the inbox                         acked, handler not run (``duplicate``)
handler succeeds                             inbox entry + handler writes commit together; acked
handler raises :class:`PermanentError`,      dead-lettered at once (bad input is not retried)
a contract or validation error
handler raises anything else / times out     copied to the retry queue for its attempt (delay
                                             ladder), then acked; after ``max_attempts`` attempts
                                             dead-lettered with the reason
handler raises :class:`TransientError`, or  retried along the ladder for as long as it takes
MongoDB is unreachable (:func:`is_outage`)   (an outage), never dead-lettered
the process is stopping                      in-flight work gets ``drain_timeout``; what is left
                                             is ``nack(requeue=True)``-ed back to the queue
the process dies                             the broker redelivers; after ``x-delivery-limit``
                                             redeliveries it dead-letters the message itself
===========================================  ===================================================

Failure reasons in headers are scrubbed of personal data (:func:`skolsynk.logging.scrub`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel
from pydantic import ValidationError
from pymongo.errors import ConnectionFailure, PyMongoError

from skolsynk.contracts.envelope import ContractMismatch, Envelope, MessageContract
from skolsynk.logging import bound_context, get_logger, scrub
from skolsynk.messaging.broker import Broker
from skolsynk.messaging.inbox import AlreadyProcessed, Inbox
from skolsynk.messaging.outbox import Outbox
from skolsynk.messaging.publisher import (
    HEADER_ATTEMPT,
    HEADER_FAILED_AT,
    HEADER_FAILURE_REASON,
    HEADER_FAILURE_TYPE,
    HEADER_ORIGINAL_QUEUE,
    Publisher,
)
from skolsynk.messaging.topology import QueueSpec, Topology, declare_work_queue
from skolsynk.observability import Metrics
from skolsynk.storage import MongoClient, Session

log = get_logger(__name__)

MAX_REASON_LENGTH = 500
#: A broker call made while stopping (cancel, close) gives up after this, so a dead broker cannot
#: hold the shutdown past its budget.
BROKER_CALL_TIMEOUT_SECONDS = 3.0


class TransientError(Exception):
    """Something outside us is unavailable (a vendor is down): retry with the delay ladder, staying
    on its last step, and never dead-letter for it. The queue's age shows the outage instead."""


def is_outage(error: BaseException) -> bool:
    """An error that says a dependency is unavailable rather than that the message is bad: the database
    unreachable or failing over, or a transaction that lost a race and may simply be run again."""
    if isinstance(error, TransientError | ConnectionFailure):
        return True
    return isinstance(error, PyMongoError) and (
        error.has_error_label("TransientTransactionError") or error.has_error_label("RetryableWriteError")
    )


class PermanentError(Exception):
    """The message can never succeed (bad input, unknown reference): dead-letter it now. The text must
    not contain personal data; it is scrubbed anyway."""


@dataclass
class MessageContext:
    """What a handler gets besides the envelope."""

    envelope: Envelope
    attempt: int
    redelivered: bool
    queue: str
    session: Session | None = None
    outbox: Outbox | None = None
    _emitted: list[Envelope] = field(default_factory=list)

    async def emit(
        self, message: MessageContract | Envelope, *, exchange: str, routing_key: str, producer: str | None = None
    ) -> Envelope:
        """Queue a message caused by this one, committed with the handler's writes (outbox)."""
        if self.outbox is None or self.session is None:
            raise RuntimeError("emit() needs a consumer with a MongoDB client and an outbox")
        envelope = (
            message
            if isinstance(message, Envelope)
            else message.to_envelope(caused_by=self.envelope, producer=producer)
        )
        await self.outbox.add(envelope, exchange=exchange, routing_key=routing_key, session=self.session)
        self._emitted.append(envelope)
        return envelope


Handler = Callable[[Envelope, MessageContext], Awaitable[None]]


class Consumer:
    """Consumes one work queue with one handler. Scale by running more replicas of the service."""

    def __init__(
        self,
        *,
        broker: Broker,
        publisher: Publisher,
        topology: Topology,
        queue: QueueSpec,
        handler: Handler,
        metrics: Metrics,
        prefetch: int,
        max_attempts: int,
        handler_timeout_seconds: float,
        mongo: MongoClient | None = None,
        inbox: Inbox | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self._broker = broker
        self._publisher = publisher
        self._topology = topology
        self.spec = queue
        self._handler = handler
        self._metrics = metrics
        self._prefetch = prefetch
        self._max_attempts = max_attempts
        self._handler_timeout = handler_timeout_seconds
        self._mongo = mongo
        self._inbox = inbox
        self._outbox = outbox
        if inbox is not None and mongo is None:
            raise ValueError("an inbox needs the MongoDB client for its transactions")
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._stopping = False

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def start(self) -> None:
        self._channel = await self._broker.channel(confirms=False, prefetch=self._prefetch)
        self._queue = await declare_work_queue(self._channel, self._topology, self.spec)
        self._consumer_tag = await self._queue.consume(self._on_message, no_ack=False)
        log.info("consumer_started", queue=self.spec.name, prefetch=self._prefetch)

    async def ready(self) -> bool:
        """Readiness check: the consumer is attached and its channel open."""
        return (
            not self._stopping
            and self._consumer_tag is not None
            and self._channel is not None
            and not self._channel.is_closed
            and self._broker.is_connected()
        )

    async def stop(self, drain_timeout: float) -> None:
        """Stop receiving, let in-flight work finish within ``drain_timeout``, requeue the rest.
        Safe to call twice, and bounded even when the broker is unreachable."""
        if self._stopping:
            return
        self._stopping = True
        if self._queue is not None and self._consumer_tag is not None:
            try:
                async with asyncio.timeout(BROKER_CALL_TIMEOUT_SECONDS):
                    await self._queue.cancel(self._consumer_tag)
            except Exception:  # connection gone: the broker requeues unacked deliveries on its own
                log.warning("consumer_cancel_failed", queue=self.spec.name, exc_info=True)
        pending = set(self._inflight)
        log.info("consumer_draining", queue=self.spec.name, inflight=len(pending), budget_seconds=drain_timeout)
        if pending:
            _done, still_running = await asyncio.wait(pending, timeout=drain_timeout)
            for task in still_running:
                task.cancel()
            if still_running:
                await asyncio.gather(*still_running, return_exceptions=True)
            log.info(
                "consumer_drained",
                queue=self.spec.name,
                completed=len(pending) - len(still_running),
                requeued=len(still_running),
            )
        if self._channel is not None and not self._channel.is_closed:
            try:
                async with asyncio.timeout(BROKER_CALL_TIMEOUT_SECONDS):
                    await self._channel.close()
            except Exception:
                log.warning("consumer_channel_close_failed", queue=self.spec.name, exc_info=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        self._metrics.consumer_inflight.labels(self.spec.name).inc()
        try:
            await self._process(message)
        finally:
            self._inflight.discard(task)
            self._metrics.consumer_inflight.labels(self.spec.name).dec()

    async def _process(self, message: AbstractIncomingMessage) -> None:
        queue = self.spec.name
        if self._stopping:
            await self._settle(message.nack(requeue=True), "requeue_shutdown")
            return
        try:
            envelope = Envelope.model_validate_json(message.body)
        except ValidationError as error:
            reason = f"invalid envelope: {error.error_count()} error(s), first at {_first_error_location(error)}"
            await self._dead_letter(message, reason=reason, error_type="InvalidEnvelope", attempt=1)
            return
        headers = message.headers or {}
        previous_attempts = headers.get(HEADER_ATTEMPT, 0)
        attempt = (previous_attempts if isinstance(previous_attempts, int) else 0) + 1
        with bound_context(
            queue=queue,
            message_id=str(envelope.message_id),
            message_type=envelope.message_type,
            tenant_id=envelope.tenant_id,
            correlation_id=str(envelope.correlation_id) if envelope.correlation_id else None,
        ):
            age = (datetime.now(UTC) - envelope.produced_at).total_seconds()
            self._metrics.message_age_seconds.labels(queue).observe(max(age, 0.0))
            if self._inbox is not None and await self._inbox.seen(envelope.message_id):
                await self._settle(message.ack(), "duplicate")
                return
            started = time.monotonic()
            try:
                async with asyncio.timeout(self._handler_timeout):
                    emitted = await self._run_handler(envelope, message, attempt)
            except AlreadyProcessed:
                await self._settle(message.ack(), "duplicate")
                return
            except asyncio.CancelledError:
                # Shutdown ran out of drain budget: give the message back, uncounted.
                await self._settle(message.nack(requeue=True), "requeue_shutdown")
                raise
            except (PermanentError, ContractMismatch, ValidationError) as error:
                log.warning("message_rejected_permanently", error_type=type(error).__name__)
                await self._dead_letter(message, reason=str(error), error_type=type(error).__name__, attempt=attempt)
                return
            except Exception as error:  # noqa: BLE001 - any other failure is retried, then dead-lettered
                await self._retry_or_dead_letter(message, error, attempt)
                return
            finally:
                self._metrics.message_processing_seconds.labels(queue).observe(time.monotonic() - started)
            if emitted and self._outbox is not None:
                self._outbox.notify()
            await self._settle(message.ack(), "ack")

    async def _run_handler(self, envelope: Envelope, message: AbstractIncomingMessage, attempt: int) -> bool:
        """Run the handler, in a transaction with the inbox entry when there is an inbox. Returns
        whether it emitted messages into the outbox."""
        if self._inbox is None or self._mongo is None:
            context = MessageContext(envelope, attempt, bool(message.redelivered), self.spec.name)
            await self._handler(envelope, context)
            return False
        inbox = self._inbox
        emitted = False

        async def unit_of_work(session: Session) -> None:
            nonlocal emitted
            context = MessageContext(
                envelope, attempt, bool(message.redelivered), self.spec.name, session=session, outbox=self._outbox
            )
            await inbox.record(envelope.message_id, session=session)
            await self._handler(envelope, context)
            emitted = bool(context._emitted)

        async with self._mongo.start_session() as session:
            await session.with_transaction(unit_of_work)
        return emitted

    async def _retry_or_dead_letter(self, message: AbstractIncomingMessage, error: Exception, attempt: int) -> None:
        error_type = type(error).__name__
        if attempt >= self._max_attempts and not is_outage(error):
            log.error(
                "message_failed_permanently", attempt=attempt, error_type=error_type, reason=_clean_reason(str(error))
            )
            await self._dead_letter(message, reason=str(error) or error_type, error_type=error_type, attempt=attempt)
            return
        step = self.spec.retry_step_for_attempt(attempt)
        log.warning(
            "message_failed_retrying",
            attempt=attempt,
            error_type=error_type,
            retry_in_seconds=self.spec.retry_delays_seconds[step],
        )
        headers = _carry_headers(message)
        headers[HEADER_ATTEMPT] = attempt
        headers[HEADER_FAILURE_TYPE] = error_type
        headers[HEADER_FAILURE_REASON] = _clean_reason(str(error) or error_type)
        try:
            await self._publisher.publish_raw(
                message.body, exchange="", routing_key=self.spec.retry_queue(step), headers=headers, template=message
            )
        except Exception:
            # Could not park it for later: let the broker redeliver (counts against x-delivery-limit).
            log.exception("retry_publish_failed")
            await self._settle(message.reject(requeue=True), "retry")
            return
        await self._settle(message.ack(), "retry")

    async def _dead_letter(
        self, message: AbstractIncomingMessage, *, reason: str, error_type: str, attempt: int
    ) -> None:
        headers = _carry_headers(message)
        headers.update(
            {
                HEADER_ATTEMPT: attempt,
                HEADER_FAILURE_TYPE: error_type,
                HEADER_FAILURE_REASON: _clean_reason(reason),
                HEADER_FAILED_AT: datetime.now(UTC).isoformat(),
                HEADER_ORIGINAL_QUEUE: self.spec.name,
            }
        )
        try:
            await self._publisher.publish_raw(
                message.body,
                exchange=self._topology.dead_letter_exchange,
                routing_key=self.spec.name,
                headers=headers,
                template=message,
            )
        except Exception:
            # The broker's own dead-lettering still keeps the message (without our reason headers).
            log.exception("dead_letter_publish_failed")
            await self._settle(message.reject(requeue=False), "dead_letter")
            return
        await self._settle(message.ack(), "dead_letter")

    async def _settle(self, settlement: Awaitable[None], outcome: str) -> None:
        try:
            await settlement
        except Exception:
            # The channel died under us (reconnect): the broker redelivers, the inbox dedupes.
            log.warning("settle_failed", outcome=outcome, exc_info=True)
            return
        self._metrics.messages_consumed.labels(self.spec.name, outcome).inc()


def _carry_headers(message: AbstractIncomingMessage) -> dict[str, Any]:
    return {k: v for k, v in (message.headers or {}).items() if not k.startswith("x-death") and k != "x-delivery-count"}


def _clean_reason(reason: str) -> str:
    return scrub(reason)[:MAX_REASON_LENGTH]


def _first_error_location(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first.get("loc", ())) or "(body)"
    return f"{location} ({first.get('type', 'error')})"
