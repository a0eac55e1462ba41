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
handler raises :class:`Deferred`             the same, on a ladder counted by deferrals only
                                             (the first deferral waits the first step)
the process is stopping                      in-flight work gets ``drain_timeout``; what is left
                                             is ``nack(requeue=True)``-ed back to the queue
the process dies                             the broker redelivers; after ``x-delivery-limit``
                                             redeliveries it dead-letters the message itself
===========================================  ===================================================

Failure reasons in headers are scrubbed of personal data (:func:`skolsynk.logging.scrub`).

:class:`BatchConsumer` hands its handler up to ``batch_size`` deliveries at once (what prefetch
brought within ``linger_seconds`` of the first). Every delivery of a batch ends as the table says,
settled on its own:

===========================================  ===================================================
envelope does not parse, already in the      as above, before the handler runs (one inbox read
inbox, or twice in the batch (idempotent)    for the whole batch)
handler succeeds                             idempotent: one transaction holds the handler's
                                             writes and ONE inbox insert of the whole batch;
                                             then every delivery is acked
handler reports failures by position         each failed delivery is dead-lettered, retried or
(``{index: error}``)                         retried forever exactly as the table above says for
                                             that error; the others are acked. Idempotent: the
                                             transaction is aborted (the failed ones must leave
                                             nothing behind) and the rest is handled again
handler raises (the batch as a whole)        an outage: every delivery to the retry ladder; any
                                             other error: the batch is taken apart and every
                                             delivery handled alone (a batch of one, its own
                                             transaction), so a poison message meets its fate alone
the process is stopping                      buffered deliveries are requeued at once; running
                                             batches get ``drain_timeout``, then are requeued
===========================================  ===================================================
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
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


class Deferred(TransientError):
    """Not yet: something this message needs is on its way (a reference another delivery brings).
    Retried, never dead-lettered, on a ladder of its own that starts at the first step however many
    attempts the message had (counted in ``x-skolsynk-deferrals``) and stays on the short steps
    (:data:`DEFERRED_MAX_STEP`)."""


#: A deferred message waits at most on this step of the ladder (1-based: 2 is the second, 10 s by default).
DEFERRED_MAX_STEP = 2
#: How often a message was deferred (:class:`Deferred`): which step of the retry ladder it waits on.
HEADER_DEFERRALS = "x-skolsynk-deferrals"


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
    _after_commit: list[Callable[[], None]] = field(default_factory=list)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the handler's writes are committed (metrics, in-memory state): a
        transaction that is retried (a write conflict) runs the handler again, this only once."""
        self._after_commit.append(callback)

    def _committed(self) -> None:
        for callback in self._after_commit:
            callback()

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
        await self._release_unstarted()
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

    async def _release_unstarted(self) -> None:
        """Give back deliveries held but not yet handed to a handler (none here; batches buffer)."""

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
            context._committed()
            return False
        inbox = self._inbox
        emitted = False
        last: MessageContext | None = None

        async def unit_of_work(session: Session) -> None:
            nonlocal emitted, last
            context = MessageContext(
                envelope, attempt, bool(message.redelivered), self.spec.name, session=session, outbox=self._outbox
            )
            last = context
            await inbox.record(envelope.message_id, session=session)
            await self._handler(envelope, context)
            emitted = bool(context._emitted)

        async with self._mongo.start_session() as session:
            await session.with_transaction(unit_of_work)
        if last is not None:
            last._committed()
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
        headers = _carry_headers(message)
        if isinstance(error, Deferred):
            # Its own ladder, from the first step: earlier failures (an outage) do not make it wait longer.
            previous = headers.get(HEADER_DEFERRALS, 0)
            deferrals = (previous if isinstance(previous, int) else 0) + 1
            headers[HEADER_DEFERRALS] = deferrals
            # Waiting for something on its way: short steps only (the first, then the second), never
            # the long ones an outage climbs to.
            step = self.spec.retry_step_for_attempt(min(deferrals, DEFERRED_MAX_STEP))
        log.warning(
            "message_failed_retrying",
            attempt=attempt,
            error_type=error_type,
            retry_in_seconds=self.spec.retry_delays_seconds[step],
        )
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


BatchHandler = Callable[[list[MessageContext]], Awaitable[Mapping[int, BaseException] | None]]
"""Handles a batch; returns the failures by position in the batch (``None`` or ``{}``: all succeeded)."""

#: How long a batch waits for more deliveries after its first before it is handled as it is.
DEFAULT_LINGER_SECONDS = 0.05


@dataclass
class _Delivery:
    message: AbstractIncomingMessage
    envelope: Envelope
    attempt: int


class _PartialBatch(Exception):
    """Aborts a batch's transaction when the handler reported failures."""

    def __init__(self, failures: dict[int, BaseException]) -> None:
        super().__init__(f"{len(failures)} deliveries of the batch failed")
        self.failures = failures


class BatchConsumer(Consumer):
    """Consumes one work queue in batches: one handler call, and for an idempotent consumer one
    transaction and one inbox insert, per batch. Settles every delivery on its own (see the module's
    table). The channel's prefetch is two batches by default, so one fills while the other runs.

    A batch starts when ``batch_size`` deliveries are there, or ``linger_seconds`` after the first; one whose
    linger is over while another batch runs keeps gathering until that one ends (or it is full). A queue
    that fills faster than it is consumed makes full batches; one that fills about as fast as it is consumed
    (a dispatcher behind the normaliser) makes batches of what arrived during the last one, not of what
    arrived within the linger: fewer, larger batches (fewer store round trips per message), and an isolated
    message still starts within the linger."""

    def __init__(
        self,
        *,
        broker: Broker,
        publisher: Publisher,
        topology: Topology,
        queue: QueueSpec,
        handler: BatchHandler,
        metrics: Metrics,
        batch_size: int,
        max_attempts: int,
        handler_timeout_seconds: float,
        linger_seconds: float = DEFAULT_LINGER_SECONDS,
        prefetch: int | None = None,
        mongo: MongoClient | None = None,
        inbox: Inbox | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("a batch holds at least one delivery")
        super().__init__(
            broker=broker,
            publisher=publisher,
            topology=topology,
            queue=queue,
            handler=self._handle_alone,
            metrics=metrics,
            prefetch=prefetch if prefetch is not None else 2 * batch_size,
            max_attempts=max_attempts,
            handler_timeout_seconds=handler_timeout_seconds,
            mongo=mongo,
            inbox=inbox,
            outbox=outbox,
        )
        self.batch_size = batch_size
        self._batch_handler = handler
        self._linger = linger_seconds
        self._buffer: list[AbstractIncomingMessage] = []
        self._linger_timer: asyncio.TimerHandle | None = None
        #: The buffer's linger is over, and it waits for the batch that runs.
        self._lingered = False

    @property
    def inflight(self) -> int:
        """Batches being handled, and messages received but not yet in a batch."""
        return len(self._inflight) + len(self._buffer)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            await self._settle(message.nack(requeue=True), "requeue_shutdown")
            return
        self._metrics.consumer_inflight.labels(self.spec.name).inc()
        self._buffer.append(message)
        if len(self._buffer) >= self.batch_size:
            self._flush()
        elif self._linger_timer is None and not self._lingered:
            self._linger_timer = asyncio.get_running_loop().call_later(self._linger, self._linger_over)

    def _linger_over(self) -> None:
        self._linger_timer = None
        if self._inflight:
            self._lingered = True  # started when the batch that runs ends (or the buffer is full)
            return
        self._flush()

    def _flush(self) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        self._lingered = False
        batch, self._buffer = self._buffer, []
        if not batch:
            return
        task = asyncio.create_task(self._run_batch(batch), name=f"batch:{self.spec.name}")
        self._inflight.add(task)
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if self._lingered and not self._stopping:
            self._flush()

    async def _release_unstarted(self) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        self._lingered = False
        held, self._buffer = self._buffer, []
        for message in held:
            await self._settle(message.nack(requeue=True), "requeue_shutdown")
        self._metrics.consumer_inflight.labels(self.spec.name).dec(len(held))

    async def _run_batch(self, messages: list[AbstractIncomingMessage]) -> None:
        try:
            await self._process_batch(messages)
        finally:
            self._metrics.consumer_inflight.labels(self.spec.name).dec(len(messages))

    async def _process_batch(self, messages: list[AbstractIncomingMessage]) -> None:
        if len(messages) == 1 or self._stopping:
            for message in messages:
                await self._process(message)
            return
        deliveries: list[_Delivery] = []
        for message in messages:
            try:
                envelope = Envelope.model_validate_json(message.body)
            except ValidationError as error:
                reason = f"invalid envelope: {error.error_count()} error(s), first at {_first_error_location(error)}"
                await self._dead_letter(message, reason=reason, error_type="InvalidEnvelope", attempt=1)
                continue
            age = (datetime.now(UTC) - envelope.produced_at).total_seconds()
            self._metrics.message_age_seconds.labels(self.spec.name).observe(max(age, 0.0))
            deliveries.append(_Delivery(message, envelope, _attempt_of(message)))
        if self._inbox is not None and deliveries:
            deliveries = await self._without_duplicates(deliveries, self._inbox)
        await self._handle_batch(deliveries)

    async def _without_duplicates(self, deliveries: list[_Delivery], inbox: Inbox) -> list[_Delivery]:
        """Ack what the inbox already holds, or what came twice in this batch (one read for all)."""
        seen = await inbox.seen_many([d.envelope.message_id for d in deliveries])
        fresh: list[_Delivery] = []
        for delivery in deliveries:
            if delivery.envelope.message_id in seen:
                await self._settle(delivery.message.ack(), "duplicate")
                continue
            seen.add(delivery.envelope.message_id)
            fresh.append(delivery)
        return fresh

    async def _handle_batch(self, deliveries: list[_Delivery]) -> None:
        remaining = deliveries
        while remaining:
            started = time.monotonic()
            try:
                async with asyncio.timeout(self._handler_timeout):
                    failures, emitted = await self._run_batch_handler(remaining)
            except asyncio.CancelledError:
                # Shutdown ran out of drain budget: give the batch back, uncounted.
                for delivery in remaining:
                    await self._settle(delivery.message.nack(requeue=True), "requeue_shutdown")
                raise
            except Exception as error:  # noqa: BLE001 - the batch as a whole failed
                self._observe_batch(remaining, started)
                await self._after_batch_failure(remaining, error)
                return
            self._observe_batch(remaining, started)
            if failures and self._inbox is not None:
                # The transaction was aborted: settle the failed ones, handle the rest again.
                for index, delivery in enumerate(remaining):
                    if index in failures:
                        await self._settle_failure(delivery, failures[index])
                remaining = [d for index, d in enumerate(remaining) if index not in failures]
                continue
            if emitted and self._outbox is not None:
                self._outbox.notify()
            for index, delivery in enumerate(remaining):
                if index in failures:
                    await self._settle_failure(delivery, failures[index])
                else:
                    await self._settle(delivery.message.ack(), "ack")
            return

    def _observe_batch(self, deliveries: list[_Delivery], started: float) -> None:
        elapsed = time.monotonic() - started
        histogram = self._metrics.message_processing_seconds.labels(self.spec.name)
        for _ in deliveries:
            histogram.observe(elapsed)

    async def _after_batch_failure(self, deliveries: list[_Delivery], error: Exception) -> None:
        if is_outage(error):
            log.warning(
                "batch_failed_retrying", queue=self.spec.name, size=len(deliveries), error_type=type(error).__name__
            )
            for delivery in deliveries:
                with _bound(self.spec.name, delivery.envelope):
                    await self._retry_or_dead_letter(delivery.message, error, delivery.attempt)
            return
        # Which delivery broke the batch is unknown: every one is handled alone, in order.
        log.warning(
            "batch_failed_handling_alone", queue=self.spec.name, size=len(deliveries), error_type=type(error).__name__
        )
        for delivery in deliveries:
            await self._process(delivery.message)

    async def _settle_failure(self, delivery: _Delivery, error: BaseException) -> None:
        with _bound(self.spec.name, delivery.envelope):
            if isinstance(error, AlreadyProcessed):
                await self._settle(delivery.message.ack(), "duplicate")
            elif isinstance(error, PermanentError | ContractMismatch | ValidationError):
                log.warning("message_rejected_permanently", error_type=type(error).__name__)
                await self._dead_letter(
                    delivery.message, reason=str(error), error_type=type(error).__name__, attempt=delivery.attempt
                )
            elif isinstance(error, Exception):
                await self._retry_or_dead_letter(delivery.message, error, delivery.attempt)
            else:  # a BaseException that is not an Exception is not a handler's verdict
                await self._retry_or_dead_letter(delivery.message, RuntimeError(type(error).__name__), delivery.attempt)

    async def _run_batch_handler(self, deliveries: list[_Delivery]) -> tuple[dict[int, BaseException], bool]:
        """Run the handler on the batch, in one transaction with one inbox insert when there is an
        inbox. Returns the failures by position and whether messages were emitted into the outbox."""
        queue = self.spec.name
        if self._inbox is None or self._mongo is None:
            contexts = [MessageContext(d.envelope, d.attempt, bool(d.message.redelivered), queue) for d in deliveries]
            failures = _checked(await self._batch_handler(contexts), len(contexts))
            for position, context in enumerate(contexts):
                if position not in failures:
                    context._committed()
            return failures, False
        inbox = self._inbox
        emitted = False
        last: list[MessageContext] = []

        async def unit_of_work(session: Session) -> None:
            nonlocal emitted, last
            contexts = [
                MessageContext(
                    d.envelope, d.attempt, bool(d.message.redelivered), queue, session=session, outbox=self._outbox
                )
                for d in deliveries
            ]
            last = contexts
            failures = _checked(await self._batch_handler(contexts), len(contexts))
            if failures:
                raise _PartialBatch(failures)
            await inbox.record_many([d.envelope.message_id for d in deliveries], session=session)
            emitted = any(c._emitted for c in contexts)

        try:
            async with self._mongo.start_session() as session:
                await session.with_transaction(unit_of_work)
        except _PartialBatch as partial:
            return partial.failures, False
        for context in last:
            context._committed()
        return {}, emitted

    async def _handle_alone(self, envelope: Envelope, context: MessageContext) -> None:
        """The per-delivery path (a batch of one, or a broken batch taken apart): the batch handler
        with one delivery, its failure raised as the per-message consumer expects."""
        failures = _checked(await self._batch_handler([context]), 1)
        if 0 in failures:
            raise failures[0]


def _checked(failures: Mapping[int, BaseException] | None, size: int) -> dict[int, BaseException]:
    if not failures:
        return {}
    wrong = [i for i in failures if not 0 <= i < size]
    if wrong:
        raise RuntimeError(f"the batch handler reported failures for positions {wrong} of a batch of {size}")
    return dict(failures)


def _attempt_of(message: AbstractIncomingMessage) -> int:
    previous = (message.headers or {}).get(HEADER_ATTEMPT, 0)
    return (previous if isinstance(previous, int) else 0) + 1


def _bound(queue: str, envelope: Envelope) -> Any:
    return bound_context(
        queue=queue,
        message_id=str(envelope.message_id),
        message_type=envelope.message_type,
        tenant_id=envelope.tenant_id,
        correlation_id=str(envelope.correlation_id) if envelope.correlation_id else None,
    )
