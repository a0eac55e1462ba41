"""Messaging against the real RabbitMQ and the Mongo wire server: confirms, returns, retries, DLQ,
idempotency and the broker's own delivery limit."""

from __future__ import annotations

import time
import uuid

import aio_pika
import pytest

from skolsynk.contracts import Envelope, SyncRequested
from skolsynk.messaging import MessageContext, PermanentError, TransientError, UnroutableMessage
from skolsynk.messaging.publisher import (
    HEADER_ATTEMPT,
    HEADER_FAILURE_REASON,
    HEADER_FAILURE_TYPE,
    HEADER_ORIGINAL_QUEUE,
)
from skolsynk.service import ServiceApp
from tests.helpers import drain_queue, queue_depth, wait_for, wait_for_depth

pytestmark = pytest.mark.connected


def sync_request(tenant: str = "kommun-a") -> Envelope:
    return SyncRequested(source_id="google", requested_by="test").to_envelope(tenant_id=tenant, producer="test")


def consumed(app: ServiceApp, queue: str, outcome: str) -> float:
    return app.metrics.messages_consumed.labels(queue, outcome)._value.get()


async def test_round_trip_with_confirms(make_app, amqp_url):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    received: list[Envelope] = []

    async def handler(envelope: Envelope, context: MessageContext) -> None:
        received.append(envelope)

    app.add_consumer(queue, handler)
    await app.start()
    sent = sync_request()
    await app.publisher.publish(sent, exchange=app.topology.exchange("control"), routing_key="sync.requested")

    await wait_for(lambda: len(received) == 1, what="the message to be consumed")
    assert received[0] == sent
    assert SyncRequested.from_envelope(received[0]).source_id == "google"
    assert app.metrics.messages_published.labels(app.topology.exchange("control"), "confirmed")._value.get() == 1
    await wait_for(lambda: consumed(app, queue, "ack") == 1, what="the ack")
    assert await queue_depth(amqp_url, queue) == 0


async def test_unroutable_publish_raises_and_publisher_keeps_working(make_app):
    app: ServiceApp = make_app()
    await app.start()
    vendor_exchange = app.topology.exchange("vendor")

    with pytest.raises(UnroutableMessage, match="no queue bound"):
        await app.publisher.publish(sync_request(), exchange=vendor_exchange, routing_key="nobody.kommun-a")
    with pytest.raises(UnroutableMessage, match="does not exist"):
        await app.publisher.publish(sync_request(), exchange=f"{vendor_exchange}-missing", routing_key="x")

    # The broker closed the channel for the missing exchange; the next publish still confirms.
    await app.publisher.publish(sync_request(), exchange=app.topology.exchange("control"), routing_key="sync.requested")
    assert app.metrics.messages_published.labels(vendor_exchange, "returned")._value.get() == 1


async def test_failing_message_is_retried_with_delays_then_dead_lettered_with_reason(make_app, amqp_url, settings):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    attempts: list[float] = []

    async def always_fails(envelope: Envelope, context: MessageContext) -> None:
        attempts.append(time.monotonic())
        raise RuntimeError("vendor rejected anna.svensson@example.se (19900101-1234)")

    app.add_consumer(queue, always_fails)
    await app.start()
    sent = sync_request()
    await app.publisher.publish(sent, exchange=app.topology.exchange("control"), routing_key="sync.requested")

    dlq = app.topology.queue(queue).dead_letter_queue
    await wait_for_depth(amqp_url, dlq, 1)
    max_attempts = settings.broker.max_attempts
    assert len(attempts) == max_attempts
    delays = settings.broker.retry_delays_seconds
    for n in range(1, max_attempts):
        # Each retry waits at least its step of the ladder (TTL queues are not early).
        assert attempts[n] - attempts[n - 1] >= delays[min(n, len(delays)) - 1] * 0.9

    [dead] = await drain_queue(amqp_url, dlq)
    assert Envelope.model_validate_json(dead.body) == sent
    assert dead.headers[HEADER_ATTEMPT] == max_attempts
    assert dead.headers[HEADER_FAILURE_TYPE] == "RuntimeError"
    assert dead.headers[HEADER_ORIGINAL_QUEUE] == queue
    reason = dead.headers[HEADER_FAILURE_REASON]
    assert "vendor rejected" in reason
    assert "anna" not in reason
    assert "19900101" not in reason
    assert consumed(app, queue, "retry") == max_attempts - 1
    assert consumed(app, queue, "dead_letter") == 1


async def test_permanent_error_goes_to_dlq_without_retries(make_app, amqp_url):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    calls = 0

    async def rejects(envelope: Envelope, context: MessageContext) -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("school unit code must have 8 digits")

    app.add_consumer(queue, rejects)
    await app.start()
    await app.publisher.publish(sync_request(), exchange=app.topology.exchange("control"), routing_key="sync.requested")

    dlq = app.topology.queue(queue).dead_letter_queue
    await wait_for_depth(amqp_url, dlq, 1)
    assert calls == 1
    [dead] = await drain_queue(amqp_url, dlq)
    assert dead.headers[HEADER_FAILURE_TYPE] == "PermanentError"
    assert dead.headers[HEADER_FAILURE_REASON] == "school unit code must have 8 digits"


async def test_message_that_is_not_an_envelope_is_dead_lettered_untouched(make_app, amqp_url):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    calls = 0

    async def handler(envelope: Envelope, context: MessageContext) -> None:
        nonlocal calls
        calls += 1

    app.add_consumer(queue, handler)
    await app.start()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(app.topology.exchange("control"))
        await exchange.publish(aio_pika.Message(body=b'{"not": "an envelope"'), routing_key="sync.requested")

    dlq = app.topology.queue(queue).dead_letter_queue
    await wait_for_depth(amqp_url, dlq, 1)
    [dead] = await drain_queue(amqp_url, dlq)
    assert dead.body == b'{"not": "an envelope"'
    assert dead.headers[HEADER_FAILURE_TYPE] == "InvalidEnvelope"
    assert dead.headers[HEADER_FAILURE_REASON].startswith("invalid envelope")
    assert calls == 0


async def test_same_message_id_twice_has_its_effect_once(make_app, mongo, settings):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    counters = app.db["counters"]

    async def counts(envelope: Envelope, context: MessageContext) -> None:
        await counters.update_one({"_id": "runs"}, {"$inc": {"n": 1}}, upsert=True, session=context.session)

    app.add_consumer(queue, counts)
    await app.start()
    sent = sync_request()
    for _ in range(2):
        await app.publisher.publish(sent, exchange=app.topology.exchange("control"), routing_key="sync.requested")

    await wait_for(lambda: consumed(app, queue, "ack") + consumed(app, queue, "duplicate") == 2, what="both deliveries")
    assert consumed(app, queue, "duplicate") == 1
    stored = await mongo[settings.store.mongodb_database]["counters"].find_one({"_id": "runs"})
    assert stored["n"] == 1


async def test_broker_dead_letters_after_the_delivery_limit(make_app, amqp_url, settings):
    """A consumer that dies on a message (simulated by reject+requeue) cannot loop forever: the quorum
    queue's explicit x-delivery-limit moves it to the DLQ."""
    app: ServiceApp = make_app()
    await app.start()  # declares the topology
    queue = app.queue_name("connectors", "sync-requests")
    await app.publisher.publish(sync_request(), exchange=app.topology.exchange("control"), routing_key="sync.requested")

    deliveries = 0
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        work = await channel.declare_queue(queue, passive=True)

        async def crashes(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal deliveries
            deliveries += 1
            await message.reject(requeue=True)

        await work.consume(crashes)
        dlq = app.topology.queue(queue).dead_letter_queue
        await wait_for_depth(amqp_url, dlq, 1)
    assert deliveries == settings.broker.delivery_limit + 1
    [dead] = await drain_queue(amqp_url, dlq)
    assert dead.headers["x-first-death-reason"] == "delivery_limit"


async def test_outbox_message_emitted_by_a_handler_is_relayed(make_app, amqp_url):
    app: ServiceApp = make_app(vendor_ids=("demo-vendor",))
    source_queue = app.queue_name("connectors", "sync-requests")
    vendor_queue = app.queue_name("dispatcher", "demo-vendor")
    received: list[Envelope] = []

    async def forwards(envelope: Envelope, context: MessageContext) -> None:
        await context.emit(
            SyncRequested(source_id="forwarded", requested_by="test"),
            exchange=app.topology.exchange("vendor"),
            routing_key=f"demo-vendor.{envelope.tenant_id}",
        )

    async def collects(envelope: Envelope, context: MessageContext) -> None:
        received.append(envelope)

    app.add_consumer(source_queue, forwards)
    app.add_consumer(vendor_queue, collects)
    await app.start()
    cause = sync_request()
    await app.publisher.publish(cause, exchange=app.topology.exchange("control"), routing_key="sync.requested")

    await wait_for(lambda: len(received) == 1, what="the emitted message")
    assert received[0].causation_id == cause.message_id
    assert received[0].correlation_id == cause.message_id
    assert received[0].tenant_id == "kommun-a"
    assert uuid.UUID(str(received[0].message_id)) != cause.message_id


async def test_transient_errors_are_retried_past_max_attempts_and_never_dead_lettered(make_app, amqp_url, settings):
    app: ServiceApp = make_app()
    queue = app.queue_name("connectors", "sync-requests")
    calls = 0

    async def vendor_down_for_a_while(envelope: Envelope, context: MessageContext) -> None:
        nonlocal calls
        calls += 1
        if calls <= settings.broker.max_attempts + 1:
            raise TransientError("vendor unavailable")

    app.add_consumer(queue, vendor_down_for_a_while)
    await app.start()
    await app.publisher.publish(sync_request(), exchange=app.topology.exchange("control"), routing_key="sync.requested")

    await wait_for(lambda: consumed(app, queue, "ack") == 1, timeout=30, what="success after the outage")
    assert calls == settings.broker.max_attempts + 2
    assert consumed(app, queue, "dead_letter") == 0
    assert await queue_depth(amqp_url, app.topology.queue(queue).dead_letter_queue) == 0
